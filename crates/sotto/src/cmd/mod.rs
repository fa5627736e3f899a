//! One module per subcommand.

pub(crate) mod bench;
pub(crate) mod chat;
pub(crate) mod contact;
pub(crate) mod contacts;
pub(crate) mod demo;
pub(crate) mod group;
pub(crate) mod inbox;
pub(crate) mod init;
pub(crate) mod invite;
pub(crate) mod profile;
pub(crate) mod recv;
pub(crate) mod register;
pub(crate) mod relay;
pub(crate) mod relay_trust;
pub(crate) mod send;
pub(crate) mod verify;
