//! What a key may spend: a GCRA rate (one request per interval, bursts allowed) or a quota
//! per UTC calendar period, and what a store answers for one request.

use std::time::Duration;

/// A rate as GCRA (the "generic cell rate algorithm") sees it: one request costs `interval`,
/// and a key may run `burst` requests ahead of its schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    /// The cost of one request, in nanoseconds (at least 1).
    pub interval: u64,
    /// Requests that may come at once.
    pub burst: u64,
}

/// What a store answered for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spend {
    /// Allowed: `remaining` more may come now; the budget is whole again in `reset`.
    Allowed {
        /// Requests that may still come at once.
        remaining: u64,
        /// Until the budget is whole again (rates) or the window ends (quotas).
        reset: Duration,
    },
    /// Refused: the next request is allowed in `retry_after`.
    Refused {
        /// Until one request is allowed again.
        retry_after: Duration,
    },
}

impl Gcra {
    /// `count` requests per `per`, with bursts of `burst`.
    pub fn new(count: u64, per: Duration, burst: u64) -> Self {
        let interval = u64::try_from(per.as_nanos() / u128::from(count.max(1))).unwrap_or(u64::MAX).max(1);
        Self { interval, burst: burst.max(1) }
    }

    /// Spends one request of a key whose theoretical arrival time is `tat` (0: unseen), at
    /// `now` (both in nanoseconds on one clock). On success, `tat` moves on.
    pub fn spend(&self, tat: &mut u64, now: u64) -> Spend {
        let start = (*tat).max(now);
        let next = start.saturating_add(self.interval);
        let window = self.interval.saturating_mul(self.burst);
        // Allowed while the new schedule stays within one burst of now.
        if next > now.saturating_add(window) {
            return Spend::Refused { retry_after: Duration::from_nanos(next - now - window) };
        }
        *tat = next;
        Spend::Allowed {
            remaining: (now.saturating_add(window) - next) / self.interval,
            reset: Duration::from_nanos(next - now),
        }
    }

    /// The debt (`tat - now`) from which a key's next request is refused: its budget is spent.
    pub fn spent_at(&self) -> u64 {
        self.interval.saturating_mul(self.burst - 1).saturating_add(1)
    }

    /// Whether one request would be allowed now, without spending it.
    pub fn would_allow(&self, tat: u64, now: u64) -> bool {
        tat.max(now).saturating_add(self.interval) <= now.saturating_add(self.interval.saturating_mul(self.burst))
    }

    /// The length of one whole burst, for `RateLimit-Policy`'s window.
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.interval.saturating_mul(self.burst))
    }
}

/// The calendar period of a quota, in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// From each full hour.
    Hour,
    /// From each midnight.
    Day,
    /// From the first of each month.
    Month,
}

impl Period {
    /// The window holding `unix` (seconds): its number and its end (Unix seconds).
    pub fn window(self, unix: u64) -> (u64, u64) {
        match self {
            Self::Hour => (unix / 3600, (unix / 3600 + 1) * 3600),
            Self::Day => (unix / 86_400, (unix / 86_400 + 1) * 86_400),
            Self::Month => {
                let (year, month) = year_month(unix / 86_400);
                let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
                (year * 12 + month - 1, days_from_civil(next_year, next_month) * 86_400)
            }
        }
    }

    /// The nominal length, for `RateLimit-Policy`'s window (a month counts 30 days).
    pub fn seconds(self) -> u64 {
        match self {
            Self::Hour => 3600,
            Self::Day => 86_400,
            Self::Month => 30 * 86_400,
        }
    }
}

/// The year and month (1–12) of a day counted from 1970-01-01 (H. Hinnant's civil algorithm).
fn year_month(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month)
}

/// Days from 1970-01-01 to the first of `month` of `year`.
fn days_from_civil(year: u64, month: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_burst_is_allowed_then_one_request_per_interval() {
        let gcra = Gcra::new(1, Duration::from_secs(1), 3);
        let mut tat = 0;
        let t0 = 100 * SEC;
        let spent: Vec<Spend> = (0..4).map(|_| gcra.spend(&mut tat, t0)).collect();
        assert_eq!(spent[0], Spend::Allowed { remaining: 2, reset: Duration::from_secs(1) });
        assert_eq!(spent[2], Spend::Allowed { remaining: 0, reset: Duration::from_secs(3) });
        assert_eq!(spent[3], Spend::Refused { retry_after: Duration::from_secs(1) });
        assert!(!gcra.would_allow(tat, t0) && gcra.would_allow(tat, t0 + SEC));
        assert_eq!(gcra.spend(&mut tat, t0 + SEC), Spend::Allowed { remaining: 0, reset: Duration::from_secs(3) });
        assert_eq!(gcra.window(), Duration::from_secs(3));
    }

    #[test]
    fn quota_windows_follow_the_utc_calendar() {
        // 2026-12-06T17:00:00Z
        let t = 1_796_576_400;
        assert_eq!(Period::Hour.window(t + 59), (t / 3600, t + 3600));
        assert_eq!(Period::Day.window(t).1, 1_796_601_600, "the next midnight");
        assert_eq!(Period::Month.window(t).1, 1_798_761_600, "2027-01-01T00:00:00Z");
        assert_eq!(Period::Month.window(1_798_761_600).0, Period::Month.window(t).0 + 1);
        // 2028-02-10: a leap February ends on the 29th.
        assert_eq!(Period::Month.window(1_833_753_600).1, 1_835_481_600, "2028-03-01");
    }
}
