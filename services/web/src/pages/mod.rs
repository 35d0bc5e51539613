//! The pages, one module per part of the console; each gives its routes, merged in
//! `app.rs`.

pub mod access;
pub mod account;
pub mod activity;
pub mod addresses;
pub mod auth;
pub mod departments;
pub mod home;
pub mod invitations;
pub mod invite;
pub mod join;
pub mod mail;
pub mod mailboxes;
pub mod people;
pub mod reset;
