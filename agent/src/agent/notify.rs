//! Talking to systemd (`Type=notify`): `READY=1`, `STATUS=`, `WATCHDOG=1`, `STOPPING=1`,
//! `EXTEND_TIMEOUT_USEC=`. Without `NOTIFY_SOCKET` (not under systemd) every call does nothing.
//!
//! Not here: deciding when the agent is ready or how often to pet the watchdog (the main loop).

use std::time::Duration;

use sd_notify::NotifyState;

/// The service manager, if there is one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notifier;

impl Notifier {
    fn send(self, state: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(false, state) {
            tracing::debug!("sd_notify: {e}");
        }
    }

    /// Settings valid, identity known: serving.
    pub fn ready(self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A one-line status for `systemctl status`.
    pub fn status(self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// The main loop is alive.
    pub fn watchdog(self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// Stopping: no new work; `extend` is how long the rest may take.
    pub fn stopping(self, extend: Duration) {
        let usec = u32::try_from(extend.as_micros()).unwrap_or(u32::MAX);
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping"),
            NotifyState::ExtendTimeoutUsec(usec),
        ]);
    }

    /// How often to pet the watchdog (half its period), when systemd set one.
    pub fn watchdog_interval() -> Option<Duration> {
        let mut usec = 0u64;
        sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2))
    }
}
