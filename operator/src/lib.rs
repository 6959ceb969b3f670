pub mod retry;
pub mod source;
pub mod td;
pub mod transfer;
