pub mod signature;
pub mod webhook;
