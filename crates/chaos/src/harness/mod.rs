//! The harness proper (binary side): workload, fault injector and the run that ties them
//! to the cluster and the checkers.

pub mod counter;
pub mod crash;
pub mod disk;
pub mod faults;
pub mod run;
pub mod session;
pub mod workload;
