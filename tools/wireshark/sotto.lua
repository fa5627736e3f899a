-- sotto.lua: a Wireshark / tshark dissector for sotto's client-relay frames.
--
-- Every sotto frame is one binary WebSocket message (docs/PROTOCOL.md, part II):
--
--     frame = version:u8 (0x01) || type:u8 || body
--
-- client -> relay types 0x41..0x47, relay -> client types 0x01..0x0A. This file decodes every
-- frame type: its name, the message and delivery ids, identities (shown as the first bytes of
-- the public key), sizes, prekey records and error codes. It registers as a heuristic on the
-- WebSocket payload ("ws"): a binary message starting with version 0x01 and a known type is a
-- sotto frame; one that does not then decode completely, with no byte left over (as the Rust
-- decoder in crates/wire requires), is shown as a malformed sotto frame (sotto.malformed, and an
-- expert error), which is what an attacker's garbage looks like.
--
-- Usage (the relay and the demo listen on arbitrary ports, so let the HTTP heuristic find the
-- WebSocket upgrade):
--
--     tshark -X lua_script:sotto.lua --enable-heuristic http_tcp -r capture.pcap -Y sotto
--     tshark -X lua_script:sotto.lua --enable-heuristic http_tcp -r capture.pcap -Y sotto \
--         -T fields -e frame.number -e sotto.type_name -e sotto.message_id -e sotto.delivery_id \
--         -e sotto.body_len -e sotto.error.name
--
-- or copy it into Wireshark's personal Lua plugins folder (Help > About > Folders).
-- Tested by crates/demo/tests/pcap.rs against pcaps of `sotto demo` and against one frame of
-- every type encoded by crates/wire.

local sotto = Proto("sotto", "sotto relay protocol")

local CLIENT_TYPES = {
    [0x41] = "Authenticate",
    [0x42] = "UploadPrekeys",
    [0x43] = "FetchBundle",
    [0x44] = "Send",
    [0x45] = "Ack",
    [0x46] = "Ping",
    [0x47] = "SendMulti",
}
local RELAY_TYPES = {
    [0x01] = "Challenge",
    [0x02] = "AuthOk",
    [0x03] = "Accepted",
    [0x04] = "Deliver",
    [0x05] = "Bundle",
    [0x06] = "PrekeysLow",
    [0x07] = "PrekeysStored",
    [0x08] = "Error",
    [0x09] = "Pong",
    [0x0A] = "Drained",
}
local TYPES = {}
for k, v in pairs(CLIENT_TYPES) do TYPES[k] = v end
for k, v in pairs(RELAY_TYPES) do TYPES[k] = v end

-- docs/PROTOCOL.md "Error codes"; the names are sotto_wire::ErrorCode::label.
local ERRORS = {
    [1] = "malformed",
    [2] = "too_large",
    [3] = "unauthorized",
    [4] = "invite_required",
    [5] = "rate_limited",
    [6] = "quota_full",
    [7] = "unknown_recipient",
    [8] = "no_bundle",
    [9] = "prekey_limit",
    [10] = "timeout",
    [11] = "overloaded",
    [12] = "internal",
    [13] = "superseded",
    [14] = "shutting_down",
    [15] = "protocol_violation",
    [16] = "too_many_connections",
    [17] = "storage_full",
    [18] = "sender_quota_full",
    [19] = "registration_limited",
}
local ERROR_CONTEXTS = { [0] = "none", [1] = "message id", [2] = "identity" }
local ENVELOPES = {
    [0x01] = "ratchet message",
    [0x02] = "initial message (PQXDH)",
    [0x03] = "group message (Sender Keys)",
}

-- Limits of docs/PROTOCOL.md "Limits".
local MAX_BODY_LEN = 98304
local MAX_PREKEY_BLOB_LEN = 2048
local MAX_PREKEYS_PER_UPLOAD = 100
local MAX_ACKS_PER_FRAME = 1024
local MAX_INVITE_LEN = 64
local MAX_MULTI_RECIPIENTS = 255

local f = sotto.fields
f.version = ProtoField.uint8("sotto.version", "Version", base.DEC)
f.type = ProtoField.uint8("sotto.type", "Type", base.HEX, TYPES)
f.type_name = ProtoField.string("sotto.type_name", "Type name")
f.direction = ProtoField.string("sotto.direction", "Direction")
f.frame_len = ProtoField.uint32("sotto.frame_len", "Frame length", base.DEC)
f.identity = ProtoField.bytes("sotto.identity", "Identity key")
f.recipient = ProtoField.bytes("sotto.recipient", "Recipient identity key")
f.recipient_count = ProtoField.uint32("sotto.recipient_count", "Recipients", base.DEC)
f.sender = ProtoField.bytes("sotto.sender", "Sender identity key")
f.signature = ProtoField.bytes("sotto.signature", "Signature")
f.invite = ProtoField.bytes("sotto.invite", "Invite token")
f.message_id = ProtoField.bytes("sotto.message_id", "Message id")
f.delivery_id = ProtoField.uint64("sotto.delivery_id", "Delivery id", base.DEC)
f.timestamp_ms = ProtoField.uint64("sotto.timestamp_ms", "Timestamp (ms since the Unix epoch)", base.DEC)
f.body_len = ProtoField.uint32("sotto.body_len", "Body length (ciphertext)", base.DEC)
f.body = ProtoField.bytes("sotto.body", "Body (ciphertext)")
f.envelope = ProtoField.uint8("sotto.envelope", "Envelope", base.HEX, ENVELOPES)
f.ack_count = ProtoField.uint32("sotto.ack_count", "Delivery ids acknowledged", base.DEC)
f.ack_id = ProtoField.uint64("sotto.ack_id", "Acknowledged delivery id", base.DEC)
f.ping = ProtoField.uint64("sotto.ping", "Ping/Pong value", base.DEC)
f.relay_id = ProtoField.bytes("sotto.relay_id", "Relay id")
f.nonce = ProtoField.bytes("sotto.nonce", "Nonce")
f.max_frame_len = ProtoField.uint32("sotto.max_frame_len", "Max frame length", base.DEC)
f.max_body_len = ProtoField.uint32("sotto.max_body_len", "Max body length", base.DEC)
f.count_x25519 = ProtoField.uint32("sotto.prekeys.x25519", "One-time X25519 prekeys left", base.DEC)
f.count_kem = ProtoField.uint32("sotto.prekeys.kem", "One-time ML-KEM prekeys left", base.DEC)
f.record_id = ProtoField.uint32("sotto.record.id", "Prekey record id", base.DEC)
f.record_len = ProtoField.uint32("sotto.record.len", "Prekey record length", base.DEC)
f.record_blob = ProtoField.bytes("sotto.record.blob", "Prekey record")
f.record_count = ProtoField.uint32("sotto.record.count", "Records", base.DEC)
f.kem_last_resort = ProtoField.bool("sotto.kem_is_last_resort", "ML-KEM prekey is the last-resort one")
f.error_code = ProtoField.uint16("sotto.error.code", "Error code", base.DEC, ERRORS)
f.error_name = ProtoField.string("sotto.error.name", "Error")
f.error_context = ProtoField.uint8("sotto.error.context", "Error context", base.DEC, ERROR_CONTEXTS)
f.malformed = ProtoField.string("sotto.malformed", "Malformed: why")

local ex_malformed = ProtoExpert.new("sotto.expert.malformed", "Malformed sotto frame",
    expert.group.MALFORMED, expert.severity.ERROR)
sotto.experts = { ex_malformed }

-- A cursor over the frame. Every read checks the remaining length and raises a Lua error on a
-- short frame (caught by pcall below), so no input can make the dissector read past the end.
local Cursor = {}
Cursor.__index = Cursor

local function cursor(tvb)
    return setmetatable({ tvb = tvb, pos = 0, len = tvb:len() }, Cursor)
end

function Cursor:take(n, what)
    if n < 0 or self.pos + n > self.len then
        error("truncated: " .. what, 0)
    end
    local r = self.tvb:range(self.pos, n)
    self.pos = self.pos + n
    return r
end

function Cursor:u8(what) return self:take(1, what) end
function Cursor:u16(what) return self:take(2, what) end
function Cursor:u32(what) return self:take(4, what) end
function Cursor:u64(what) return self:take(8, what) end

-- Adds a field to the tree (tree may be nil when only the structure is checked).
local function add(tree, field, range, value)
    if tree then
        if value ~= nil then
            return tree:add(field, range, value)
        end
        return tree:add(field, range)
    end
    return nil
end

-- The first n bytes in lower-case hex (as sotto prints keys and ids), with an ellipsis.
local function hex_prefix(range, n)
    return string.lower(tostring(range:bytes():subset(0, math.min(n, range:len())))) .. "…"
end

-- bool: one byte, 0 or 1; anything else is an error (as in the Rust codec).
local function read_bool(c, what)
    local r = c:u8(what)
    local v = r:uint()
    if v > 1 then error("bad bool: " .. what, 0) end
    return r, v == 1
end

-- bytes<max>: u32 length, then that many bytes.
local function read_var(c, max, what)
    local lr = c:u32(what .. " length")
    local n = lr:uint()
    if n > max then error(what .. " longer than " .. max, 0) end
    return lr, c:take(n, what), n
end

local function read_record(c, tree, label)
    local start = c.pos
    local id = c:u32("record id")
    local lr, blob, n = read_var(c, MAX_PREKEY_BLOB_LEN, "record blob")
    if tree then
        local t = tree:add(sotto, c.tvb:range(start, c.pos - start),
            string.format("%s: id %d, %d bytes", label, id:uint(), n))
        t:add(f.record_id, id)
        t:add(f.record_len, lr)
        if n > 0 then t:add(f.record_blob, blob) end
    end
end

local function read_opt_record(c, tree, label)
    local _, present = read_bool(c, label .. " present")
    if present then read_record(c, tree, label) end
end

-- list<T,max>: u32 count (at most max, and not more than the remaining bytes could hold).
local function read_count(c, max, min_size, what)
    local r = c:u32(what .. " count")
    local n = r:uint()
    if n > max or n * min_size > c.len - c.pos then
        error("too many " .. what, 0)
    end
    return r, n
end

local function read_counts(c, tree)
    add(tree, f.count_x25519, c:u32("x25519 count"))
    add(tree, f.count_kem, c:u32("kem count"))
end

local function read_body(c, tree, info)
    local lr, body, n = read_var(c, MAX_BODY_LEN, "body")
    add(tree, f.body_len, lr)
    if n > 0 then
        add(tree, f.body, body)
        add(tree, f.envelope, body:range(0, 1))
    end
    info[#info + 1] = string.format("body %d B", n)
end

-- Body decoders, one per type. Each reads exactly its body and describes the frame in `info`.
local BODIES = {}

BODIES[0x41] = function(c, tree, info) -- Authenticate
    local id = c:take(32, "identity")
    add(tree, f.identity, id)
    add(tree, f.signature, c:take(64, "signature"))
    local _, present = read_bool(c, "invite present")
    if present then
        local _, inv = read_var(c, MAX_INVITE_LEN, "invite")
        add(tree, f.invite, inv)
    end
    info[#info + 1] = "identity " .. hex_prefix(id, 4)
end

BODIES[0x42] = function(c, tree, info) -- UploadPrekeys
    read_opt_record(c, tree, "Signed prekey")
    read_opt_record(c, tree, "Last-resort ML-KEM prekey")
    local r, n = read_count(c, MAX_PREKEYS_PER_UPLOAD, 8, "one-time X25519 prekeys")
    add(tree, f.record_count, r)
    for i = 1, n do read_record(c, tree, "One-time X25519 prekey") end
    local r2, n2 = read_count(c, MAX_PREKEYS_PER_UPLOAD, 8, "one-time ML-KEM prekeys")
    add(tree, f.record_count, r2)
    for i = 1, n2 do read_record(c, tree, "One-time ML-KEM prekey") end
    info[#info + 1] = string.format("%d X25519 + %d ML-KEM one-time prekeys", n, n2)
end

BODIES[0x43] = function(c, tree, info) -- FetchBundle
    local id = c:take(32, "identity")
    add(tree, f.identity, id)
    info[#info + 1] = "of " .. hex_prefix(id, 4)
end

BODIES[0x44] = function(c, tree, info) -- Send
    local to = c:take(32, "recipient")
    add(tree, f.recipient, to)
    local mid = c:take(16, "message id")
    add(tree, f.message_id, mid)
    info[#info + 1] = "to " .. hex_prefix(to, 4)
    info[#info + 1] = "id " .. hex_prefix(mid, 4)
    read_body(c, tree, info)
end

BODIES[0x45] = function(c, tree, info) -- Ack
    local r, n = read_count(c, MAX_ACKS_PER_FRAME, 8, "delivery ids")
    add(tree, f.ack_count, r)
    for i = 1, n do add(tree, f.ack_id, c:u64("delivery id")) end
    info[#info + 1] = string.format("%d delivery id%s", n, n == 1 and "" or "s")
end

BODIES[0x46] = function(c, tree, info) -- Ping
    local v = c:u64("value")
    add(tree, f.ping, v)
    info[#info + 1] = "value " .. tostring(v:uint64())
end

BODIES[0x47] = function(c, tree, info) -- SendMulti
    local r, n = read_count(c, MAX_MULTI_RECIPIENTS, 32, "recipients")
    if n == 0 then error("no recipients", 0) end
    add(tree, f.recipient_count, r)
    for i = 1, n do add(tree, f.recipient, c:take(32, "recipient")) end
    local mid = c:take(16, "message id")
    add(tree, f.message_id, mid)
    info[#info + 1] = string.format("to %d recipient%s", n, n == 1 and "" or "s")
    info[#info + 1] = "id " .. hex_prefix(mid, 4)
    read_body(c, tree, info)
end

BODIES[0x01] = function(c, tree, info) -- Challenge
    add(tree, f.relay_id, c:take(32, "relay id"))
    add(tree, f.nonce, c:take(32, "nonce"))
    add(tree, f.max_frame_len, c:u32("max frame length"))
    add(tree, f.max_body_len, c:u32("max body length"))
end

BODIES[0x02] = function(c, tree, info) read_counts(c, tree) end -- AuthOk

BODIES[0x03] = function(c, tree, info) -- Accepted
    local mid = c:take(16, "message id")
    add(tree, f.message_id, mid)
    info[#info + 1] = "id " .. hex_prefix(mid, 4)
end

BODIES[0x04] = function(c, tree, info) -- Deliver
    local did = c:u64("delivery id")
    add(tree, f.delivery_id, did)
    local from = c:take(32, "sender")
    add(tree, f.sender, from)
    local mid = c:take(16, "message id")
    add(tree, f.message_id, mid)
    add(tree, f.timestamp_ms, c:u64("timestamp"))
    info[#info + 1] = "delivery " .. tostring(did:uint64())
    info[#info + 1] = "from " .. hex_prefix(from, 4)
    info[#info + 1] = "id " .. hex_prefix(mid, 4)
    read_body(c, tree, info)
end

BODIES[0x05] = function(c, tree, info) -- Bundle
    local id = c:take(32, "identity")
    add(tree, f.identity, id)
    read_record(c, tree, "Signed prekey")
    read_opt_record(c, tree, "One-time X25519 prekey")
    read_record(c, tree, "ML-KEM prekey")
    local r, last = read_bool(c, "kem_is_last_resort")
    add(tree, f.kem_last_resort, r)
    info[#info + 1] = "of " .. hex_prefix(id, 4)
end

BODIES[0x06] = function(c, tree, info) read_counts(c, tree) end -- PrekeysLow
BODIES[0x07] = function(c, tree, info) read_counts(c, tree) end -- PrekeysStored

BODIES[0x08] = function(c, tree, info) -- Error
    local cr = c:u16("code")
    local code = cr:uint()
    add(tree, f.error_code, cr)
    local name = ERRORS[code] or string.format("unknown (%d)", code)
    add(tree, f.error_name, cr, name)
    local kr = c:u8("context")
    local kind = kr:uint()
    add(tree, f.error_context, kr)
    info[#info + 1] = ERRORS[code] and string.format("%s (%d)", name, code) or name
    if kind == 1 then
        local mid = c:take(16, "message id")
        add(tree, f.message_id, mid)
        info[#info + 1] = "id " .. hex_prefix(mid, 4)
    elseif kind == 2 then
        add(tree, f.identity, c:take(32, "identity"))
    elseif kind ~= 0 then
        error("unknown error context", 0)
    end
end

BODIES[0x09] = function(c, tree, info) -- Pong
    local v = c:u64("value")
    add(tree, f.ping, v)
    info[#info + 1] = "value " .. tostring(v:uint64())
end
BODIES[0x0A] = function(c, tree, info) end -- Drained

-- Decodes one frame into tree; returns ok (or false and why), the type and the info text.
local function decode(tvb, tree)
    local c = cursor(tvb)
    local ty = tvb:range(1, 1):uint()
    local info = {}
    c:take(2, "header")
    local ok, err = pcall(BODIES[ty], c, tree, info)
    if ok and c.pos ~= c.len then
        local n = c.len - c.pos
        ok, err = false, string.format("%d trailing byte%s", n, n == 1 and "" or "s")
    end
    return ok, err, ty, info
end

-- The Info column lists every sotto frame of the packet (several may share one TCP segment;
-- the WebSocket dissector writes its own text between them, so the whole list is set each time).
local info_packet, info_texts = -1, {}

local function dissect(tvb, pinfo, root)
    local ty = tvb:range(1, 1):uint()
    local name = TYPES[ty]
    local tree = root:add(sotto, tvb:range(), "sotto " .. name)
    tree:add(f.version, tvb:range(0, 1))
    tree:add(f.type, tvb:range(1, 1))
    tree:add(f.type_name, tvb:range(1, 1), name)
    tree:add(f.direction, tvb:range(1, 1),
        CLIENT_TYPES[ty] and "client to relay" or "relay to client")
    tree:add(f.frame_len, tvb:range(), tvb:len())
    local ok, err, _, info = decode(tvb, tree)
    local text = name
    if #info > 0 then text = text .. " " .. table.concat(info, ", ") end
    text = string.format("%s (%d B)", text, tvb:len())
    if not ok then
        tree:add(f.malformed, tvb:range(), err)
        tree:add_proto_expert_info(ex_malformed, err)
        text = text .. " [malformed: " .. err .. "]"
    end
    tree:append_text(string.format(", %d bytes", tvb:len()))
    pinfo.cols.protocol:set("sotto")
    if info_packet ~= pinfo.number then
        info_packet, info_texts = pinfo.number, {}
    end
    info_texts[#info_texts + 1] = text
    pinfo.cols.info:set(table.concat(info_texts, " | "))
    return tvb:len()
end

-- Heuristic on the WebSocket payload: version 1 and a known type.
local function heuristic(tvb, pinfo, root)
    if tvb:len() < 2 or tvb:range(0, 1):uint() ~= 0x01 then return false end
    if not TYPES[tvb:range(1, 1):uint()] then return false end
    dissect(tvb, pinfo, root)
    return true
end

sotto:register_heuristic("ws", heuristic)
