//! End-to-end tests: the real `td-result-export` binary against td-local over loopback.
//! One test binary; one module per area.

mod cancel;
mod cli_output;
mod columns;
mod concurrency;
mod crash;
mod digdag;
mod docs;
mod engines;
mod examples;
mod export;
mod faults;
mod fidelity;
mod hostile;
mod library;
mod proxy;
mod secrets;
mod source;
mod spec;
mod status_doc;
mod support;
mod targets;
mod td_semantics;
mod treasure_boxes;
mod workflow;
