pub mod retry;
pub mod source;
pub mod status;
pub mod td;
pub mod transfer;
