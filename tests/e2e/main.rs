//! End-to-end tests: the real `td-result-export` binary (and, as stages land, td-local over loopback).
//! One test binary; one module per area.

mod spec;
mod support;
mod treasure_boxes;
