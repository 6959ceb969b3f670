//! `td-local`: a Treasure Data API v3 server on an embedded database, and the commands that set
//! one up (`td_local::cli`).

use std::process::ExitCode;

use clap::Parser;
use td_local::cli::Cli;

/// glibc raises its mmap threshold to the size of the largest block freed (up to 32 MiB); past
/// that, part bodies (16 MiB each) and a perform's batch buffers come from the heap, which
/// keeps them once freed: RSS grew by ~50 MiB with each bulk import and never came down. A fixed
/// threshold maps such blocks on their own and unmaps them when they are freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn hand_large_blocks_back() {
    const MMAP_THRESHOLD: libc::c_int = 256 << 10;
    // SAFETY: mallopt sets a parameter of the allocator; it allocates and frees nothing.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    hand_large_blocks_back();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TD_LOCAL_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match td_local::cli::run(Cli::parse().command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
