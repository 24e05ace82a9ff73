//! Alerting-rule state: each result element becomes an alert that goes inactive → pending →
//! firing after `for`, keeps firing `keep_firing_for` after its condition clears, and once
//! resolved is kept (and re-sent as resolved) for 15 minutes, as Prometheus does. Also the
//! `ALERTS` / `ALERTS_FOR_STATE` samples, what to hand to [`Notify`](crate::Notify), and the
//! restore of `active_at` after a restart.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use strata_promql::Labels;

use crate::template::{self, TemplateData};
use crate::{Alert, OutSample};

/// How long a resolved alert is kept and re-sent (Prometheus's `resolvedRetention`).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertState {
    /// Resolved (kept for [`RESOLVED_RETENTION_MS`]) or never active.
    Inactive,
    /// Active, waiting for `for` to pass.
    Pending,
    /// Firing.
    Firing,
}

impl AlertState {
    /// `inactive`, `pending` or `firing`, as the API and `ALERTS{alertstate}` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert of a rule: one element of the rule's result, labels after templating.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveAlert {
    /// Alert labels (`alertname` included; no external labels).
    pub labels: Labels,
    /// Expanded annotations.
    pub annotations: BTreeMap<String, String>,
    /// Its state.
    pub state: AlertState,
    /// The last value of the result element.
    pub value: f64,
    /// When the element first appeared, ms.
    pub active_at: i64,
    /// When it started firing, ms.
    pub fired_at: Option<i64>,
    /// When it resolved, ms.
    pub resolved_at: Option<i64>,
    /// When it was last handed to the notifier, ms.
    pub last_sent_at: Option<i64>,
    /// Since when it has been firing only because of `keep_firing_for`, ms.
    pub keep_firing_since: Option<i64>,
    /// Until when the last sent firing alert is valid (its `endsAt`), ms.
    pub valid_until: i64,
}

/// The settings shared by every alerting rule.
#[derive(Debug, Clone)]
pub struct AlertOptions {
    /// The ruler's external labels (`$externalLabels`, and added to sent alerts).
    pub external_labels: Labels,
    /// `$externalURL` and the base of generator URLs.
    pub external_url: String,
    /// How often a still-firing alert is sent again (`--resend-delay`).
    pub resend_delay: Duration,
}

/// An alerting rule's evaluation state.
#[derive(Debug, Clone)]
pub struct AlertingState {
    /// The alert name.
    pub name: String,
    /// The rule's expression.
    pub expr: String,
    /// `for`, ms.
    pub hold_ms: i64,
    /// `keep_firing_for`, ms.
    pub keep_firing_for_ms: i64,
    /// Label templates.
    pub labels: BTreeMap<String, String>,
    /// Annotation templates.
    pub annotations: BTreeMap<String, String>,
    /// Alerts by label set.
    pub active: HashMap<Labels, ActiveAlert>,
}

/// What [`AlertingState::eval`] rejects.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlertEvalError {
    /// Two elements map to the same alert after the rule's labels were applied.
    #[error("vector contains metrics with the same labelset after applying alert labels")]
    DuplicateLabelset,
    /// More alerts than the group's `limit`.
    #[error("exceeded limit of {0} with {1} alerts")]
    Limit(usize, usize),
}

fn map_of(labels: &Labels) -> BTreeMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl AlertingState {
    /// A rule with no alerts yet.
    pub fn new(
        name: &str,
        expr: &str,
        hold: Duration,
        keep_firing_for: Duration,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
    ) -> Self {
        Self {
            name: name.to_string(),
            expr: expr.to_string(),
            hold_ms: i64::try_from(hold.as_millis()).unwrap_or(i64::MAX),
            keep_firing_for_ms: i64::try_from(keep_firing_for.as_millis()).unwrap_or(i64::MAX),
            labels,
            annotations,
            active: HashMap::new(),
        }
    }

    /// Applies one evaluation's result at `ts` (ms): creates, updates, promotes and resolves
    /// alerts. Returns the `ALERTS` and `ALERTS_FOR_STATE` samples to write. `limit` 0 means no
    /// limit; over it, every alert is dropped and the evaluation fails, as in Prometheus.
    pub fn eval(
        &mut self,
        ts: i64,
        result: &[(Labels, f64)],
        limit: usize,
        opts: &AlertOptions,
    ) -> Result<Vec<OutSample>, AlertEvalError> {
        let ext = map_of(&opts.external_labels);
        let mut seen: HashMap<Labels, ActiveAlert> = HashMap::new();
        for (labels, value) in result {
            let mut base = labels.clone();
            base.remove("__name__");
            let data = TemplateData {
                labels: map_of(&base),
                external_labels: ext.clone(),
                external_url: opts.external_url.clone(),
                value: *value,
            };
            let mut lb = base;
            for (k, t) in &self.labels {
                lb.set(k, &template::expand(t, &data));
            }
            lb.set("alertname", &self.name);
            let annotations: BTreeMap<String, String> = self
                .annotations
                .iter()
                .map(|(k, t)| (k.clone(), template::expand(t, &data)))
                .collect();
            if seen.contains_key(&lb) {
                return Err(AlertEvalError::DuplicateLabelset);
            }
            seen.insert(
                lb.clone(),
                ActiveAlert {
                    labels: lb,
                    annotations,
                    state: AlertState::Pending,
                    value: *value,
                    active_at: ts,
                    fired_at: None,
                    resolved_at: None,
                    last_sent_at: None,
                    keep_firing_since: None,
                    valid_until: 0,
                },
            );
        }
        let in_result: Vec<Labels> = seen.keys().cloned().collect();
        for (lb, new) in seen {
            match self.active.get_mut(&lb) {
                Some(a) if a.state != AlertState::Inactive => {
                    a.value = new.value;
                    a.annotations = new.annotations;
                }
                _ => {
                    self.active.insert(lb, new);
                }
            }
        }
        let mut remove = Vec::new();
        let mut num_active = 0;
        for (lb, a) in self.active.iter_mut() {
            if !in_result.contains(lb) {
                let mut keep_firing = false;
                if a.state == AlertState::Firing && self.keep_firing_for_ms > 0 {
                    let since = *a.keep_firing_since.get_or_insert(ts);
                    keep_firing = ts - since < self.keep_firing_for_ms;
                }
                let expired = a
                    .resolved_at
                    .is_some_and(|r| ts - r > RESOLVED_RETENTION_MS);
                if a.state == AlertState::Pending || expired {
                    remove.push(lb.clone());
                    continue;
                }
                if a.state != AlertState::Inactive && !keep_firing {
                    a.state = AlertState::Inactive;
                    a.resolved_at = Some(ts);
                }
                if !keep_firing {
                    continue;
                }
            } else {
                a.keep_firing_since = None;
            }
            num_active += 1;
            if a.state == AlertState::Pending && ts - a.active_at >= self.hold_ms {
                a.state = AlertState::Firing;
                a.fired_at = Some(ts);
            }
        }
        for lb in remove {
            self.active.remove(&lb);
        }
        if limit > 0 && num_active > limit {
            self.active.clear();
            return Err(AlertEvalError::Limit(limit, num_active));
        }
        let mut out = Vec::new();
        for a in self.active.values() {
            if a.state == AlertState::Inactive {
                continue;
            }
            let mut l = a.labels.clone();
            l.set("__name__", "ALERTS");
            l.set("alertstate", a.state.as_str());
            out.push(OutSample {
                labels: l,
                t: ts,
                v: 1.0,
            });
            let mut f = a.labels.clone();
            f.set("__name__", "ALERTS_FOR_STATE");
            out.push(OutSample {
                labels: f,
                t: ts,
                v: a.active_at as f64 / 1000.0,
            });
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// The alerts due to be (re-)sent at `ts`: firing ones every `resend_delay`, resolved ones
    /// once after resolving and then every `resend_delay` while retained. `interval` is the
    /// group's, used for the alerts' validity (`endsAt`) as Prometheus computes it.
    pub fn due(&mut self, ts: i64, interval: Duration, opts: &AlertOptions) -> Vec<Alert> {
        let resend = i64::try_from(opts.resend_delay.as_millis()).unwrap_or(i64::MAX);
        let interval = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        let mut due: Vec<&mut ActiveAlert> = self
            .active
            .values_mut()
            .filter(|a| a.state != AlertState::Pending)
            .collect();
        due.sort_by(|a, b| a.labels.cmp(&b.labels));
        for a in due {
            let needs = match (a.last_sent_at, a.resolved_at) {
                (None, _) => true,
                (Some(sent), Some(res)) if res > sent => true,
                (Some(sent), _) => sent.saturating_add(resend) < ts,
            };
            if !needs {
                continue;
            }
            a.last_sent_at = Some(ts);
            a.valid_until = ts.saturating_add(resend.max(interval).saturating_mul(4));
            let mut labels = a.labels.clone();
            for (k, v) in opts.external_labels.iter() {
                if labels.get(k).is_none() {
                    labels.set(k, v);
                }
            }
            out.push(Alert {
                labels,
                annotations: a.annotations.clone(),
                starts_at: a.fired_at.unwrap_or(a.active_at),
                ends_at: Some(a.resolved_at.unwrap_or(a.valid_until)),
                generator_url: generator_url(&opts.external_url, &self.expr),
            });
        }
        out
    }

    /// The rule's state for the API: firing if any alert fires, else pending if any is pending.
    pub fn state(&self) -> AlertState {
        self.active
            .values()
            .map(|a| a.state)
            .max()
            .unwrap_or(AlertState::Inactive)
    }

    /// Restores `active_at` of pending alerts after a restart from `ALERTS_FOR_STATE`
    /// series: `series` gives, per alert label set (without `__name__`), the last stored
    /// `(timestamp ms, active_at seconds)`. Alerts whose remaining `for` is shorter than
    /// `grace` get `grace` more time so a restart does not make them fire at once.
    pub fn restore(&mut self, ts: i64, series: &HashMap<Labels, (i64, f64)>, grace: Duration) {
        let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        if self.hold_ms <= 0 || self.hold_ms < grace {
            return;
        }
        for a in self.active.values_mut() {
            if a.state != AlertState::Pending {
                continue;
            }
            let Some(&(down_at, active_s)) = series.get(&a.labels) else {
                continue;
            };
            if !active_s.is_finite() {
                continue;
            }
            let restored = (active_s * 1000.0) as i64;
            let spent = down_at - restored;
            let remaining = self.hold_ms - spent;
            a.active_at = if remaining <= 0 {
                restored
            } else if remaining < grace {
                ts + grace - self.hold_ms
            } else {
                restored + (ts - down_at)
            };
            tracing::debug!(alert = %self.name, labels = %a.labels, active_at = a.active_at, "restored alert state");
        }
    }
}

/// A link to the expression in the ruler's UI, as Prometheus builds generator URLs.
pub fn generator_url(external_url: &str, expr: &str) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("g0.expr", expr);
    q.append_pair("g0.tab", "1");
    format!(
        "{}/graph?{}",
        external_url.trim_end_matches('/'),
        q.finish()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn opts() -> AlertOptions {
        AlertOptions {
            external_labels: l(&[("cluster", "eu")]),
            external_url: "http://ruler".into(),
            resend_delay: Duration::from_secs(60),
        }
    }

    fn rule(hold_s: u64, keep_s: u64) -> AlertingState {
        AlertingState::new(
            "Down",
            "up == 0",
            Duration::from_secs(hold_s),
            Duration::from_secs(keep_s),
            [("severity".to_string(), "page".to_string())].into(),
            [(
                "summary".to_string(),
                "{{ $labels.job }} is {{ $value }}".to_string(),
            )]
            .into(),
        )
    }

    fn up0() -> Vec<(Labels, f64)> {
        vec![(l(&[("__name__", "up"), ("job", "api")]), 0.0)]
    }

    const S: i64 = 1000;

    #[test]
    fn pending_then_firing_after_for_then_resolved_and_forgotten() {
        let (mut r, o) = (rule(60, 0), opts());
        let out = r.eval(0, &up0(), 0, &o).expect("eval");
        assert_eq!(r.state(), AlertState::Pending);
        let alerts = out
            .iter()
            .find(|s| s.labels.get("__name__") == Some("ALERTS"))
            .expect("ALERTS");
        assert_eq!(alerts.labels.get("alertstate"), Some("pending"));
        assert_eq!(alerts.labels.get("severity"), Some("page"));
        assert!(
            alerts.labels.get("cluster").is_none(),
            "no external labels in ALERTS"
        );
        assert!(
            r.due(0, Duration::from_secs(60), &o).is_empty(),
            "pending is not sent"
        );
        r.eval(30 * S, &up0(), 0, &o).expect("eval");
        assert_eq!(r.state(), AlertState::Pending);
        let out = r.eval(60 * S, &up0(), 0, &o).expect("eval");
        assert_eq!(r.state(), AlertState::Firing);
        let for_state = out
            .iter()
            .find(|s| s.labels.get("__name__") == Some("ALERTS_FOR_STATE"))
            .expect("ALERTS_FOR_STATE");
        assert_eq!(for_state.v, 0.0, "active since t=0s");
        let sent = r.due(60 * S, Duration::from_secs(60), &o);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].labels.get("cluster"), Some("eu"));
        assert_eq!(sent[0].annotations["summary"], "api is 0");
        assert_eq!(sent[0].starts_at, 60 * S);
        assert!(
            r.due(90 * S, Duration::from_secs(60), &o).is_empty(),
            "resend delay"
        );
        assert_eq!(r.due(121 * S, Duration::from_secs(60), &o).len(), 1);
        // Resolves: sent at once as resolved, kept 15 minutes, then dropped.
        let out = r.eval(150 * S, &[], 0, &o).expect("eval");
        assert!(out.is_empty());
        assert_eq!(r.state(), AlertState::Inactive);
        let sent = r.due(150 * S, Duration::from_secs(60), &o);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].ends_at, Some(150 * S));
        r.eval(150 * S + RESOLVED_RETENTION_MS, &[], 0, &o)
            .expect("eval");
        assert_eq!(r.active.len(), 1, "kept through retention");
        r.eval(151 * S + RESOLVED_RETENTION_MS, &[], 0, &o)
            .expect("eval");
        assert!(r.active.is_empty(), "dropped after retention");
    }

    #[test]
    fn pending_alert_that_clears_is_dropped_not_resolved() {
        let (mut r, o) = (rule(60, 0), opts());
        r.eval(0, &up0(), 0, &o).expect("eval");
        r.eval(10 * S, &[], 0, &o).expect("eval");
        assert!(r.active.is_empty());
    }

    #[test]
    fn keep_firing_for_holds_a_cleared_alert() {
        let (mut r, o) = (rule(0, 120), opts());
        r.eval(0, &up0(), 0, &o).expect("eval");
        assert_eq!(r.state(), AlertState::Firing, "for 0 fires at once");
        r.eval(60 * S, &[], 0, &o).expect("eval");
        assert_eq!(r.state(), AlertState::Firing, "kept firing");
        r.eval(119 * S + 60 * S, &[], 0, &o).expect("eval");
        assert_eq!(r.state(), AlertState::Firing);
        r.eval(180 * S, &[], 0, &o).expect("eval");
        assert_eq!(r.state(), AlertState::Inactive);
    }

    #[test]
    fn limit_and_duplicate_labelsets_fail() {
        let (mut r, o) = (rule(0, 0), opts());
        let two = vec![(l(&[("job", "a")]), 0.0), (l(&[("job", "b")]), 0.0)];
        assert_eq!(r.eval(0, &two, 1, &o), Err(AlertEvalError::Limit(1, 2)));
        assert!(r.active.is_empty());
        let dup = vec![
            (l(&[("__name__", "x"), ("job", "a")]), 0.0),
            (l(&[("__name__", "y"), ("job", "a")]), 0.0),
        ];
        assert_eq!(
            r.eval(0, &dup, 0, &o),
            Err(AlertEvalError::DuplicateLabelset)
        );
    }

    #[test]
    fn restore_keeps_active_at_across_restart() {
        let o = opts();
        let mut r = rule(600, 0);
        // Before the restart the alert was active since t=100s; the ruler went down at 400s.
        r.eval(500 * S, &up0(), 0, &o).expect("eval");
        let key = r.active.keys().next().expect("alert").clone();
        let series = HashMap::from([(key.clone(), (400 * S, 100.0))]);
        r.restore(500 * S, &series, Duration::from_secs(60));
        // 300s spent pending, 300s remain; shifted by the 100s downtime.
        assert_eq!(r.active[&key].active_at, 200 * S);
        r.eval(800 * S, &up0(), 0, &o).expect("eval");
        assert_eq!(r.state(), AlertState::Firing);

        // Almost due when the ruler went down: gets the grace period instead of firing at once.
        let mut r = rule(600, 0);
        r.eval(500 * S, &up0(), 0, &o).expect("eval");
        let series = HashMap::from([(key.clone(), (400 * S, -190.0))]);
        r.restore(500 * S, &series, Duration::from_secs(60));
        assert_eq!(r.active[&key].active_at, 500 * S + 60 * S - 600 * S);
    }
}
