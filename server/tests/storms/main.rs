//! Storms: thousands of logins or registrations at once against the real `membershipd`
//! binary. They are a test binary of their own because each one loads the machine's every
//! core: cargo runs test binaries one after another, so a storm never starves the timed
//! exchanges of the other integration tests, and [`one_at_a_time`] keeps the storms here from
//! starving each other.
//!
//! Run them with `cargo test -p unibus-server --test storms`.

#[path = "../integration/common/mod.rs"]
mod common;
#[path = "../integration/daemon/mod.rs"]
mod daemon;

mod login_storm;
mod registration_storm;

/// Held for the whole of each storm, so that the storms of this binary run one at a time
/// whatever the test harness's thread count.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static STORM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    STORM.lock().await
}
