pub mod retry;
pub mod td;
pub mod transfer;
