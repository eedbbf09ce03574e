//! The report of a benchmark: a table for people and JSON for machines.
//!
//! The JSON schema (`schema_version` 1; fields are only ever added within
//! a version):
//!
//! ```text
//! {
//!   "schema_version": 1,
//!   "driver": "chorus-http" | "chorus-quic" | "redis" | "etcd",
//!   "targets": ["http://127.0.0.1:8080", …],
//!   "workload": "a" | "b" | "c" | "d" | "f" | "write" | "delete",
//!   "distribution": "uniform" | "zipfian" | "latest",
//!   "records": 1000, "value_size": {"min": 100, "max": 100},
//!   "concurrency": 64, "rate": null | ops per second (open loop),
//!   "seed": 1, "read_options": "r=quorum", "write_options": "w=quorum",
//!   "load": null | PHASE, "run": PHASE,
//!   "extra_requests": {"sibling_resolutions": 12}   (driver's own requests,
//!                                                    both phases)
//! }
//! PHASE = {"elapsed_s": 30.0, "ok": 123456, "errors": 3,
//!          "throughput": ops/s (successful operations),
//!          "unsent": 0   (open loop: operations scheduled before the end
//!                         but not sent, the store being behind the rate),
//!          "ops": {"read": OP, "update": OP, …}}   (kinds with any operation)
//! OP = {"ok": 61728, "not_found": 0, "errors": {"quorum_not_reached": 3},
//!       "error_samples": {"quorum_not_reached": "first message"},
//!       "throughput": ops/s,
//!       "latency_us": {"min", "mean", "p50", "p90", "p99", "p999", "max"}}
//! ```
//!
//! Latencies are in microseconds, of successful operations; in an open-loop
//! run they are measured from each operation's intended send time.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::generator::Distribution;
use super::runner::Recorded;
use super::workload::{OpKind, ValueSize, Workload};

/// The schema version of [`Report`]'s JSON.
pub const SCHEMA_VERSION: u32 = 1;

/// A whole benchmark: what ran and what it measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub driver: String,
    pub targets: Vec<String>,
    pub workload: Workload,
    pub distribution: Distribution,
    pub records: u64,
    pub value_size: ValueSize,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub seed: u64,
    pub read_options: String,
    pub write_options: String,
    pub load: Option<PhaseReport>,
    pub run: PhaseReport,
    /// Requests the driver made beyond the operations, over both phases
    /// (see [`super::Driver::extra_requests`]).
    #[serde(default)]
    pub extra_requests: BTreeMap<String, u64>,
}

/// One phase (load or run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    pub elapsed_s: f64,
    /// Successful operations.
    pub ok: u64,
    /// Failed operations.
    pub errors: u64,
    /// Successful operations per second.
    pub throughput: f64,
    /// Open loop: operations scheduled before the end of the run that were
    /// not sent because the store fell behind the rate.
    #[serde(default)]
    pub unsent: u64,
    /// By operation kind (`read`, `update`, `insert`, `rmw`, `delete`).
    pub ops: BTreeMap<String, OpReport>,
}

/// One operation kind within a phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpReport {
    pub ok: u64,
    /// Successful reads that found no value.
    pub not_found: u64,
    /// Failed operations by stable code.
    pub errors: BTreeMap<String, u64>,
    /// The first message seen for each code in `errors`.
    #[serde(default)]
    pub error_samples: BTreeMap<String, String>,
    pub throughput: f64,
    pub latency_us: Latency,
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl PhaseReport {
    /// Summarises what a phase recorded.
    pub fn from_recorded(recorded: &Recorded) -> PhaseReport {
        let seconds = recorded.elapsed.as_secs_f64().max(1e-9);
        let mut ops = BTreeMap::new();
        for kind in OpKind::ALL {
            let record = recorded.kind(kind);
            let ok = record.latency.len();
            let errors: u64 = record.errors.values().sum();
            if ok + errors == 0 {
                continue;
            }
            let h = &record.latency;
            let latency = if ok == 0 {
                Latency {
                    min: 0,
                    mean: 0.0,
                    p50: 0,
                    p90: 0,
                    p99: 0,
                    p999: 0,
                    max: 0,
                }
            } else {
                Latency {
                    min: h.min(),
                    mean: round(h.mean(), 1),
                    p50: h.value_at_quantile(0.5),
                    p90: h.value_at_quantile(0.9),
                    p99: h.value_at_quantile(0.99),
                    p999: h.value_at_quantile(0.999),
                    max: h.max(),
                }
            };
            ops.insert(
                kind.name().to_owned(),
                OpReport {
                    ok,
                    not_found: record.not_found,
                    errors: record.errors.clone(),
                    error_samples: record.samples.clone(),
                    throughput: round(ok as f64 / seconds, 1),
                    latency_us: latency,
                },
            );
        }
        let ok = ops.values().map(|op| op.ok).sum();
        let errors = ops.values().map(|op| op.errors.values().sum::<u64>()).sum();
        PhaseReport {
            elapsed_s: round(recorded.elapsed.as_secs_f64(), 3),
            ok,
            errors,
            throughput: round(ok as f64 / seconds, 1),
            unsent: recorded.unsent,
            ops,
        }
    }
}

/// Rounds to `decimals` places, so the JSON is short and reads back the
/// same.
fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// The name a value has in the JSON.
fn name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn ms(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

impl Report {
    /// The final table: one line per phase and operation kind, latencies in
    /// milliseconds, then errors by code.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let size = &self.value_size;
        let _ = writeln!(
            out,
            "{} {}: workload {}, {} distribution, {} records, values of {} bytes, {} task{}{}{}",
            self.driver,
            self.targets.join(", "),
            name(&self.workload),
            name(&self.distribution),
            self.records,
            if size.min == size.max {
                size.min.to_string()
            } else {
                format!("{}..{}", size.min, size.max)
            },
            self.concurrency,
            if self.concurrency == 1 { "" } else { "s" },
            self.rate
                .map(|r| format!(", open loop at {r} ops/s"))
                .unwrap_or_default(),
            [("read", &self.read_options), ("write", &self.write_options)]
                .iter()
                .filter(|(_, options)| !options.is_empty())
                .map(|(kind, options)| format!(", {kind} {options}"))
                .collect::<String>(),
        );
        let _ = writeln!(
            out,
            "{:<5} {:<7} {:>10} {:>9} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "phase",
            "op",
            "ok",
            "not found",
            "errors",
            "ops/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms"
        );
        let phases = self
            .load
            .iter()
            .map(|p| ("load", p))
            .chain([("run", &self.run)]);
        let mut errors = Vec::new();
        for (name, phase) in phases {
            for (op, report) in &phase.ops {
                let l = &report.latency_us;
                let failed: u64 = report.errors.values().sum();
                let _ = writeln!(
                    out,
                    "{:<5} {:<7} {:>10} {:>9} {:>8} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    name,
                    op,
                    report.ok,
                    report.not_found,
                    failed,
                    report.throughput,
                    ms(l.p50),
                    ms(l.p90),
                    ms(l.p99),
                    ms(l.p999),
                    ms(l.max)
                );
                for (code, n) in &report.errors {
                    let sample = report.error_samples.get(code).map_or("", String::as_str);
                    errors.push(format!("{name} {op}: {code} x{n}, e.g. {sample}"));
                }
            }
            let not_found: u64 = phase.ops.values().map(|op| op.not_found).sum();
            let _ = writeln!(
                out,
                "{:<5} {:<7} {:>10} {:>9} {:>8} {:>10.0}   ({:.1} s)",
                name, "total", phase.ok, not_found, phase.errors, phase.throughput, phase.elapsed_s
            );
            if phase.unsent > 0 {
                errors.push(format!(
                    "{name}: {} operations scheduled before the end were not sent: \
                     the store fell behind the rate",
                    phase.unsent
                ));
            }
        }
        for line in errors {
            let _ = writeln!(out, "errors: {line}");
        }
        for (name, n) in &self.extra_requests {
            let _ = writeln!(out, "extra requests: {name} x{n}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::bench::runner::tests::{config, StallingStore};
    use crate::bench::runner::{self, Limit};

    #[tokio::test]
    async fn the_json_schema_round_trips_and_has_its_fields() {
        let config = config(None, Limit::Operations(20));
        let store = Arc::new(StallingStore::default());
        let load = PhaseReport::from_recorded(&runner::load(store.clone(), &config).await);
        let run = PhaseReport::from_recorded(&runner::run(store, &config).await);
        let report = Report {
            schema_version: SCHEMA_VERSION,
            driver: "test".into(),
            targets: vec!["fake://".into()],
            workload: config.workload,
            distribution: config.distribution,
            records: config.records,
            value_size: config.value_size,
            concurrency: config.concurrency,
            rate: None,
            seed: config.seed,
            read_options: "r=quorum".into(),
            write_options: String::new(),
            load: Some(load),
            run,
            extra_requests: BTreeMap::from([("sibling_resolutions".into(), 2)]),
        };
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);

        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["schema_version"], 1);
        assert_eq!(value["workload"], "c");
        assert_eq!(value["distribution"], "uniform");
        assert_eq!(value["value_size"]["min"], 10);
        assert_eq!(value["load"]["ops"]["insert"]["ok"], 100);
        let read = &value["run"]["ops"]["read"];
        assert_eq!(read["ok"], 20);
        for field in ["min", "mean", "p50", "p90", "p99", "p999", "max"] {
            assert!(read["latency_us"][field].is_number(), "{field}");
        }
        for field in ["elapsed_s", "ok", "errors", "throughput"] {
            assert!(value["run"][field].is_number(), "{field}");
        }
        assert!(read["errors"].is_object());
        assert_eq!(value["extra_requests"]["sibling_resolutions"], 2);
        assert!(report.table().contains("read"));
        assert!(report
            .table()
            .contains("extra requests: sibling_resolutions x2"));
        assert!(report.table().contains(", 4 tasks"), "{}", report.table());
        let one = Report {
            concurrency: 1,
            ..report
        };
        assert!(one.table().contains(", 1 task"), "{}", one.table());
        assert!(!one.table().contains("1 tasks"), "{}", one.table());
    }
}
