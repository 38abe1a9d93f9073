//! When and how long to wait before trying a request again: the one retry policy of every HTTP
//! client (the QFlow sink, the metadata server).
//!
//! Retried: connection errors, timeouts, `5xx` and `429`. Not retried: every other `4xx` (a
//! wrong token, a refused file: sending again cannot help). The wait before retry number `n`
//! is "full jitter": a uniformly random time up to `min(max_backoff, initial_backoff · 2^(n-1))`,
//! so that many scanners failing together do not retry together. A `Retry-After` header
//! (seconds or an HTTP date) replaces that wait, capped at `max_retry_after_secs`.
//!
//! Not here: sending anything. The callers log every attempt.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// A retry policy: the `[upload.qflow.retry]` table, and what `[metadata]` derives its backoff
/// into. `max_attempts = 1` disables retries (tests use it).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per request, the first included. Default 6.
    pub max_attempts: u32,
    /// Ceiling of the first wait. Default 500.
    pub initial_backoff_ms: u64,
    /// Ceiling of any wait. Default 30000.
    pub max_backoff_ms: u64,
    /// Longest `Retry-After` honoured; longer ones are cut to this. Default 300.
    pub max_retry_after_secs: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 6,
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
            max_retry_after_secs: 300,
        }
    }
}

/// What one failed attempt calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Try again, after the receiver's `Retry-After` if it gave one.
    Retry(Option<Duration>),
    /// Give up now.
    Fatal,
}

/// Whether an HTTP status is worth retrying.
pub fn status_verdict(status: u16, retry_after: Option<&str>, now: SystemTime) -> Verdict {
    match status {
        429 | 500..=599 => Verdict::Retry(retry_after.and_then(|v| parse_retry_after(v, now))),
        _ => Verdict::Fatal,
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (a date in the past means now).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

impl RetryConfig {
    /// The wait before retry number `attempt` (1 = the first retry), given the receiver's
    /// `Retry-After` if any.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(Duration::from_secs(self.max_retry_after_secs));
        }
        let shift = attempt.saturating_sub(1).min(32);
        let ceiling = self
            .initial_backoff_ms
            .saturating_mul(1u64 << shift)
            .min(self.max_backoff_ms);
        Duration::from_millis(rand::random_range(0..=ceiling))
    }

    /// Attempts allowed, at least one.
    pub fn attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        struct Case {
            name: &'static str,
            status: u16,
            retry_after: Option<&'static str>,
            want: Verdict,
        }
        let cases = [
            Case {
                name: "500",
                status: 500,
                retry_after: None,
                want: Verdict::Retry(None),
            },
            Case {
                name: "503 with seconds",
                status: 503,
                retry_after: Some("3"),
                want: Verdict::Retry(Some(Duration::from_secs(3))),
            },
            Case {
                name: "429 with a date",
                status: 429,
                retry_after: Some(Box::leak(later.into_boxed_str())),
                want: Verdict::Retry(Some(Duration::from_secs(7))),
            },
            Case {
                name: "429 with a past date",
                status: 429,
                retry_after: Some(Box::leak(past.into_boxed_str())),
                want: Verdict::Retry(Some(Duration::ZERO)),
            },
            Case {
                name: "429 with garbage",
                status: 429,
                retry_after: Some("soon"),
                want: Verdict::Retry(None),
            },
            Case {
                name: "401",
                status: 401,
                retry_after: None,
                want: Verdict::Fatal,
            },
            Case {
                name: "400 even with Retry-After",
                status: 400,
                retry_after: Some("1"),
                want: Verdict::Fatal,
            },
            Case {
                name: "413",
                status: 413,
                retry_after: None,
                want: Verdict::Fatal,
            },
        ];
        for c in cases {
            assert_eq!(
                status_verdict(c.status, c.retry_after, now),
                c.want,
                "case {}",
                c.name
            );
        }
    }

    #[test]
    fn delays_are_capped_and_jittered() {
        let cfg = RetryConfig {
            max_attempts: 5,
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
            max_retry_after_secs: 60,
        };
        for attempt in 1..20 {
            let ceiling = (100u64 << (attempt - 1).min(32)).min(1000);
            for _ in 0..50 {
                let d = cfg.delay(attempt, None);
                assert!(
                    d <= Duration::from_millis(ceiling),
                    "attempt {attempt}: {d:?}"
                );
            }
        }
        // Jitter: not always the same value.
        let seen: std::collections::BTreeSet<_> = (0..50).map(|_| cfg.delay(4, None)).collect();
        assert!(seen.len() > 1);
        assert_eq!(
            cfg.delay(1, Some(Duration::from_secs(600))),
            Duration::from_secs(60)
        );
        assert_eq!(
            cfg.delay(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            RetryConfig {
                max_attempts: 0,
                ..cfg
            }
            .attempts(),
            1
        );
    }
}
