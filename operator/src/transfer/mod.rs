//! Moving the rows: transcoding, and the append and replace protocols.

pub mod columns;
pub mod transcode;
