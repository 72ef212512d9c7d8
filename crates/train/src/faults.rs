//! Fault injection for the command line's crash and signal tests, built only with the
//! `fault-injection` feature (which those tests' dev-dependency turns on); without it,
//! every hook is an empty function.

use crate::checkpoint::TrainerState;

/// With `DAVINCI_TEST_STALL_CHECKPOINT=STAGE:STEP`, writing that checkpoint stops for a
/// minute after the weights, so a test can kill the process while it is half written.
#[cfg(feature = "fault-injection")]
pub fn stall_checkpoint(state: &TrainerState) {
    if let Ok(target) = std::env::var("DAVINCI_TEST_STALL_CHECKPOINT") {
        if target == format!("{}:{}", state.stage, state.step) {
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
pub fn stall_checkpoint(_state: &TrainerState) {}

/// With `DAVINCI_TEST_STEP_SLEEP_MS=N`, every step begins with an N ms sleep, so a test's
/// signal lands mid-run however fast the machine.
#[cfg(feature = "fault-injection")]
pub fn slow_step() {
    if let Some(ms) = std::env::var("DAVINCI_TEST_STEP_SLEEP_MS").ok().and_then(|v| v.parse().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

#[cfg(not(feature = "fault-injection"))]
pub fn slow_step() {}
