//! The load and run phases: tasks issuing operations against a [`Driver`],
//! closed loop (each task sends its next operation when the last one is
//! answered) or open loop at a fixed rate with coordinated-omission
//! correction (as wrk2 does: every operation has an intended send time on
//! a fixed schedule and its latency is measured from that time, so a stall
//! shows up in the latencies of every operation it delayed, not only the
//! one it caught).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use super::driver::{Driver, DriverError, ReadResult};
use super::generator::Distribution;
use super::workload::{key_name, make_value, Op, OpKind, OpStream, ValueSize, Workload};

/// When the run phase ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Duration(Duration),
    Operations(u64),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub workload: Workload,
    pub distribution: Distribution,
    /// Keys the load phase inserts and the run phase chooses from.
    pub records: u64,
    pub value_size: ValueSize,
    pub limit: Limit,
    /// Tasks (closed loop: operations in flight at most).
    pub concurrency: usize,
    /// Open loop at this many operations per second over all tasks.
    pub rate: Option<f64>,
    pub seed: u64,
    /// Draw a progress bar on standard error (hidden when it is not a
    /// terminal).
    pub progress: bool,
}

/// What one operation kind recorded.
#[derive(Debug, Clone)]
pub struct KindRecord {
    /// Latencies of the successful operations, in microseconds.
    pub latency: Histogram<u64>,
    /// Failed operations by stable code.
    pub errors: BTreeMap<String, u64>,
    /// The first message seen for each code.
    pub samples: BTreeMap<String, String>,
    /// Reads that found no value (successful; counted in `latency`).
    pub not_found: u64,
}

impl KindRecord {
    fn new() -> KindRecord {
        KindRecord {
            // Auto-resizing: any latency fits.
            latency: Histogram::new(3).expect("3 significant figures are valid"),
            errors: BTreeMap::new(),
            samples: BTreeMap::new(),
            not_found: 0,
        }
    }

    fn merge(&mut self, other: &KindRecord) {
        self.latency
            .add(&other.latency)
            .expect("auto-resizing histograms merge");
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
        for (code, detail) in &other.samples {
            self.samples
                .entry(code.clone())
                .or_insert_with(|| detail.clone());
        }
        self.not_found += other.not_found;
    }
}

/// What a phase recorded, per operation kind (indexed by
/// [`OpKind::index`]).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub elapsed: Duration,
    pub kinds: Vec<KindRecord>,
    /// Open loop: operations scheduled before the deadline that were not
    /// sent by then because the store did not keep up with the rate.
    pub unsent: u64,
}

impl Recorded {
    fn new() -> Recorded {
        Recorded {
            elapsed: Duration::ZERO,
            kinds: OpKind::ALL.iter().map(|_| KindRecord::new()).collect(),
            unsent: 0,
        }
    }

    fn merge(&mut self, other: &Recorded) {
        self.unsent += other.unsent;
        for (mine, theirs) in self.kinds.iter_mut().zip(&other.kinds) {
            mine.merge(theirs);
        }
    }

    /// The record of one kind.
    pub fn kind(&self, kind: OpKind) -> &KindRecord {
        &self.kinds[kind.index()]
    }

    fn record(&mut self, kind: OpKind, latency: Duration, outcome: Outcome) {
        let record = &mut self.kinds[kind.index()];
        match outcome {
            Outcome::Ok { not_found } => {
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                record
                    .latency
                    .record(micros.max(1))
                    .expect("auto-resizing histograms take any value");
                record.not_found += u64::from(not_found);
            }
            Outcome::Failed(error) => {
                *record.errors.entry(error.code.clone()).or_default() += 1;
                record.samples.entry(error.code).or_insert(error.detail);
            }
        }
    }
}

enum Outcome {
    Ok { not_found: bool },
    Failed(DriverError),
}

async fn execute<D: Driver>(driver: &D, op: Op) -> Outcome {
    let result = match op.kind {
        OpKind::Read => driver.read(&op.key).await.map(|read| match read {
            ReadResult::Found { .. } => false,
            ReadResult::NotFound { .. } => true,
        }),
        OpKind::Update | OpKind::Insert => driver
            .write(&op.key, op.value.unwrap_or_default(), None)
            .await
            .map(|()| false),
        OpKind::ReadModifyWrite => match driver.read(&op.key).await {
            Ok(read) => driver
                .write(&op.key, op.value.unwrap_or_default(), read.into_context())
                .await
                .map(|()| false),
            Err(error) => Err(error),
        },
        OpKind::Delete => driver.delete(&op.key).await.map(|()| false),
    };
    match result {
        Ok(not_found) => Outcome::Ok { not_found },
        Err(error) => Outcome::Failed(error),
    }
}

/// Counts completed operations for the progress bar.
struct Progress {
    done: Arc<AtomicU64>,
    finished: Arc<AtomicBool>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(enabled: bool, phase: &'static str, limit: Limit) -> Progress {
        let done = Arc::new(AtomicU64::new(0));
        let finished = Arc::new(AtomicBool::new(false));
        let ticker = enabled.then(|| {
            let (done, finished) = (done.clone(), finished.clone());
            tokio::spawn(async move {
                let (length, by_time) = match limit {
                    Limit::Duration(d) => (d.as_secs().max(1), true),
                    Limit::Operations(n) => (n, false),
                };
                let bar = indicatif::ProgressBar::with_draw_target(
                    Some(length),
                    indicatif::ProgressDrawTarget::stderr(),
                );
                let template = if by_time {
                    "{prefix:>5} [{bar:40}] {pos}/{len} s {msg}"
                } else {
                    "{prefix:>5} [{bar:40}] {pos}/{len} ops {msg}"
                };
                bar.set_style(
                    indicatif::ProgressStyle::with_template(template)
                        .expect("a valid template")
                        .progress_chars("=> "),
                );
                bar.set_prefix(phase);
                let start = Instant::now();
                while !finished.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let n = done.load(Ordering::Relaxed);
                    let elapsed = start.elapsed();
                    bar.set_position(if by_time { elapsed.as_secs() } else { n });
                    bar.set_message(format!(
                        "{n} ops, {:.0} ops/s",
                        n as f64 / elapsed.as_secs_f64().max(1e-3)
                    ));
                }
                bar.finish_and_clear();
            })
        });
        Progress {
            done,
            finished,
            ticker,
        }
    }

    async fn stop(self) {
        self.finished.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker {
            let _ = ticker.await;
        }
    }
}

/// The load phase: inserts keys `0..records` with `concurrency` tasks,
/// closed loop. Recorded under [`OpKind::Insert`].
pub async fn load<D: Driver>(driver: Arc<D>, config: &RunConfig) -> Recorded {
    let progress = Progress::start(config.progress, "load", Limit::Operations(config.records));
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..config.concurrency.max(1) {
        let (driver, next, done) = (driver.clone(), next.clone(), progress.done.clone());
        let (records, size) = (config.records, config.value_size);
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x4c4f_4144);
        rng.set_stream(task as u64);
        tasks.push(tokio::spawn(async move {
            let mut recorded = Recorded::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= records {
                    return recorded;
                }
                let op = Op {
                    kind: OpKind::Insert,
                    key: key_name(n),
                    value: Some(make_value(&mut rng, size)),
                };
                let sent = Instant::now();
                let outcome = execute(&*driver, op).await;
                recorded.record(OpKind::Insert, sent.elapsed(), outcome);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let recorded = gather(tasks, start).await;
    progress.stop().await;
    recorded
}

/// The run phase.
pub async fn run<D: Driver>(driver: Arc<D>, config: &RunConfig) -> Recorded {
    let progress = Progress::start(config.progress, "run", config.limit);
    let tasks_n = config.concurrency.max(1);
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = match config.limit {
        Limit::Duration(d) => Some(start + d),
        Limit::Operations(_) => None,
    };
    let mut tasks = Vec::new();
    for task in 0..tasks_n {
        let (driver, issued, done) = (driver.clone(), issued.clone(), progress.done.clone());
        let mut stream = OpStream::new(
            config.workload,
            config.distribution,
            config.records,
            config.value_size,
            config.seed,
            task as u64,
            tasks_n as u64,
        );
        let limit = config.limit;
        // Open loop: task t of T sends its k-th operation at
        // start + (t + k T) / rate.
        let schedule = config.rate.map(|rate| {
            let per_op = 1.0 / rate;
            (per_op * task as f64, per_op * tasks_n as f64)
        });
        tasks.push(tokio::spawn(async move {
            let mut recorded = Recorded::new();
            let mut k: u64 = 0;
            loop {
                if let Limit::Operations(n) = limit {
                    if issued.fetch_add(1, Ordering::Relaxed) >= n {
                        return recorded;
                    }
                }
                let intended = match schedule {
                    Some((offset, interval)) => {
                        start + Duration::from_secs_f64(offset + interval * k as f64)
                    }
                    None => Instant::now(),
                };
                k += 1;
                if let Some(deadline) = deadline {
                    if intended >= deadline {
                        return recorded;
                    }
                    // Behind schedule at the end (open loop): stop anyway,
                    // as wrk2 does, and count what was not sent.
                    if let Some((_, interval)) = schedule {
                        if Instant::now() >= deadline {
                            let left = (deadline - intended).as_secs_f64() / interval;
                            recorded.unsent += left.ceil() as u64;
                            return recorded;
                        }
                    }
                }
                // Only an operation due later waits: tokio's timer rounds
                // a deadline up to its next millisecond tick, so sleeping
                // until a time already reached (every closed-loop
                // operation, and an open-loop one sent behind schedule)
                // would still idle the task for up to a millisecond.
                if intended > Instant::now() {
                    tokio::time::sleep_until(intended).await;
                }
                let op = stream.next_op();
                let kind = op.kind;
                let outcome = execute(&*driver, op).await;
                recorded.record(kind, intended.elapsed(), outcome);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut recorded = gather(tasks, start).await;
    // A run by duration lasts at least that long, though its last
    // operations may end earlier (open loop at a low rate).
    if let Limit::Duration(d) = config.limit {
        recorded.elapsed = recorded.elapsed.max(d);
    }
    progress.stop().await;
    recorded
}

async fn gather(tasks: Vec<tokio::task::JoinHandle<Recorded>>, start: Instant) -> Recorded {
    let mut total = Recorded::new();
    for task in tasks {
        match task.await {
            Ok(recorded) => total.merge(&recorded),
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
    total.elapsed = start.elapsed();
    total
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A store that answers after 1 ms, except that 500 ms after its first
    /// request it stalls for 1 s: every request that arrives during the
    /// stall is answered when it ends.
    #[derive(Debug, Default)]
    pub(crate) struct StallingStore {
        first: Mutex<Option<Instant>>,
    }

    impl StallingStore {
        async fn answer(&self) {
            let now = Instant::now();
            let first = *self.first.lock().unwrap().get_or_insert(now);
            let (stall, end) = (
                first + Duration::from_millis(500),
                first + Duration::from_millis(1500),
            );
            if now >= stall && now < end {
                tokio::time::sleep_until(end).await;
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    impl Driver for StallingStore {
        type Context = ();

        async fn read(&self, _: &str) -> Result<ReadResult<()>, DriverError> {
            self.answer().await;
            Ok(ReadResult::Found { context: None })
        }

        async fn write(&self, _: &str, _: Vec<u8>, _: Option<()>) -> Result<(), DriverError> {
            self.answer().await;
            Ok(())
        }

        async fn delete(&self, _: &str) -> Result<(), DriverError> {
            self.answer().await;
            Ok(())
        }
    }

    pub(crate) fn config(rate: Option<f64>, limit: Limit) -> RunConfig {
        RunConfig {
            workload: Workload::C,
            distribution: Distribution::Uniform,
            records: 100,
            value_size: ValueSize { min: 10, max: 10 },
            limit,
            concurrency: 4,
            rate,
            seed: 1,
            progress: false,
        }
    }

    /// Reads that took at least 500 ms.
    fn slow_reads(recorded: &Recorded) -> u64 {
        let h = &recorded.kind(OpKind::Read).latency;
        h.count_between(500_000, h.max().max(500_000))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_charges_a_stall_to_every_operation_it_delays() {
        let store = Arc::new(StallingStore::default());
        let limit = Limit::Duration(Duration::from_millis(2500));
        let recorded = run(store, &config(Some(100.0), limit)).await;
        let reads = recorded.kind(OpKind::Read);
        // At 100 ops/s, about 100 reads were scheduled during the 1 s stall,
        // their latencies spread from ~1 s down to 0: about 50 of them
        // waited 500 ms or more, though only 4 tasks were stuck.
        let slow = slow_reads(&recorded);
        assert!(slow >= 35, "{slow} reads of 500 ms or more");
        assert!(
            reads.latency.max() >= 900_000,
            "max {}",
            reads.latency.max()
        );
        assert!(
            reads.latency.max() < 1_400_000,
            "max {}",
            reads.latency.max()
        );
    }

    /// A store that takes 100 ms for every request.
    #[derive(Debug, Default)]
    struct SlowStore;

    impl Driver for SlowStore {
        type Context = ();

        async fn read(&self, _: &str) -> Result<ReadResult<()>, DriverError> {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(ReadResult::Found { context: None })
        }

        async fn write(&self, _: &str, _: Vec<u8>, _: Option<()>) -> Result<(), DriverError> {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(())
        }

        async fn delete(&self, _: &str) -> Result<(), DriverError> {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_loop_run_that_falls_behind_ends_at_its_duration_and_counts_what_it_did_not_send(
    ) {
        // 1,000 ops/s for 1 s against 4 tasks that can do 40.
        let limit = Limit::Duration(Duration::from_secs(1));
        let recorded = run(Arc::new(SlowStore), &config(Some(1000.0), limit)).await;
        let ok = recorded.kind(OpKind::Read).latency.len();
        assert!(
            (995..=1005).contains(&(ok + recorded.unsent)),
            "{ok} sent + {} unsent of 1000 scheduled",
            recorded.unsent
        );
        assert!(recorded.unsent > 900, "{}", recorded.unsent);
        // Working through the backlog would take 25 s.
        assert!(
            recorded.elapsed < Duration::from_secs(5),
            "{:?}",
            recorded.elapsed
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_loop_sees_a_stall_only_in_the_operations_it_caught() {
        let store = Arc::new(StallingStore::default());
        let limit = Limit::Duration(Duration::from_millis(2500));
        let recorded = run(store, &config(None, limit)).await;
        let reads = recorded.kind(OpKind::Read);
        // Each of the 4 tasks is stuck in one read: coordinated omission.
        assert!(
            reads.latency.max() >= 900_000,
            "max {}",
            reads.latency.max()
        );
        assert!(slow_reads(&recorded) <= 4, "{}", slow_reads(&recorded));
    }

    /// A store that answers at once, without waiting for anything.
    #[derive(Debug, Default)]
    struct InstantStore;

    impl Driver for InstantStore {
        type Context = ();

        async fn read(&self, _: &str) -> Result<ReadResult<()>, DriverError> {
            Ok(ReadResult::Found { context: None })
        }

        async fn write(&self, _: &str, _: Vec<u8>, _: Option<()>) -> Result<(), DriverError> {
            Ok(())
        }

        async fn delete(&self, _: &str) -> Result<(), DriverError> {
            Ok(())
        }
    }

    /// tokio's timer rounds a deadline up to its next millisecond tick, so
    /// a closed-loop task that slept until "now" before each operation
    /// idled for up to a millisecond each time, and that idling counted as
    /// latency. Against a store that answers at once, the typical
    /// operation must take microseconds.
    #[tokio::test]
    async fn a_closed_loop_operation_waits_for_nothing_but_its_answer() {
        let recorded = run(
            Arc::new(InstantStore),
            &config(None, Limit::Operations(400)),
        )
        .await;
        let reads = recorded.kind(OpKind::Read);
        assert_eq!(reads.latency.len(), 400);
        // In microseconds; a timer tick per operation puts the median
        // near 1,000.
        let median = reads.latency.value_at_quantile(0.5);
        assert!(median < 300, "median {median} us");
    }

    #[tokio::test]
    async fn an_operation_count_is_exact() {
        let store = Arc::new(StallingStore::default());
        let recorded = run(store, &config(None, Limit::Operations(37))).await;
        assert_eq!(recorded.kind(OpKind::Read).latency.len(), 37);
    }
}
