//! Idle conditions (the CGN and Golem habits): a provider takes work only
//! while its host is idle enough, by load or by the hour. When a condition
//! fails it tells the broker `Paused` (with why) and keeps its session; it
//! says `Resumed` when they hold again. `brume provide status` shows why.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::Shared;

/// Decides whether the host is busy: `Some(why)` pauses the provider.
pub trait IdleProbe: Send + Sync + Debug {
    fn busy(&self) -> Option<String>;

    /// The UTC hours it works in, `(start, end)`, if it keeps hours: the
    /// broker then places only work expected to end within them.
    fn hours(&self) -> Option<(u8, u8)> {
        None
    }
}

/// The operator's conditions: the 1-minute load average at most
/// `max_load`, and (if set) the UTC hour within `hours` (`(start, end)`,
/// start included, end excluded; `(22, 6)` wraps midnight).
#[derive(Debug, Clone, Default)]
pub struct IdlePolicy {
    pub max_load: Option<f64>,
    pub hours: Option<(u8, u8)>,
}

impl IdlePolicy {
    /// Parses `START-END` (UTC hours, 0-24).
    pub fn parse_hours(s: &str) -> Result<(u8, u8), String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("{s:?}: expected START-END, e.g. 22-6"))?;
        let hour = |x: &str| match x.trim().parse::<u8>() {
            Ok(h) if h <= 24 => Ok(h % 24),
            _ => Err(format!("{x:?} is not an hour (0-24)")),
        };
        Ok((hour(a)?, hour(b)?))
    }

    fn within(hours: (u8, u8), hour: u8) -> bool {
        let (start, end) = hours;
        if start == end {
            return true;
        }
        if start < end {
            (start..end).contains(&hour)
        } else {
            hour >= start || hour < end
        }
    }
}

impl IdleProbe for IdlePolicy {
    fn hours(&self) -> Option<(u8, u8)> {
        self.hours
    }

    fn busy(&self) -> Option<String> {
        if let Some(hours) = self.hours {
            let secs = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let hour = ((secs / 3600) % 24) as u8;
            if !IdlePolicy::within(hours, hour) {
                return Some(format!(
                    "outside its hours ({:02}:00-{:02}:00 UTC; now {hour:02}h)",
                    hours.0, hours.1
                ));
            }
        }
        if let Some(max) = self.max_load {
            let load = std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
            if let Some(load) = load
                && load > max
            {
                return Some(format!("the host's load {load:.2} is over {max:.2}"));
            }
        }
        None
    }
}

/// Checks the probe every `every` and publishes the verdict (the session
/// tells the broker of each change). Ends with the provider.
pub(crate) async fn watch(shared: Arc<Shared>, probe: Arc<dyn IdleProbe>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shared.stop.cancelled() => return,
        }
        let p = probe.clone();
        let verdict = tokio::task::spawn_blocking(move || p.busy())
            .await
            .unwrap_or(None);
        shared.paused.send_if_modified(|now| {
            if *now == verdict {
                return false;
            }
            match &verdict {
                Some(why) => tracing::info!(%why, "pausing: not taking work"),
                None => tracing::info!("resuming: taking work again"),
            }
            *now = verdict;
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_wrap_midnight() {
        assert!(IdlePolicy::within((9, 17), 9) && !IdlePolicy::within((9, 17), 17));
        assert!(IdlePolicy::within((22, 6), 23) && IdlePolicy::within((22, 6), 2));
        assert!(!IdlePolicy::within((22, 6), 12));
        assert_eq!(IdlePolicy::parse_hours("22-6"), Ok((22, 6)));
        assert!(IdlePolicy::parse_hours("25-1").is_err());
    }
}
