//! Workloads (YCSB's core workloads A, B, C, D, F, plus `write` and
//! `delete`) and the seeded stream of operations one task issues.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::generator::{Distribution, KeyChooser};

/// A workload: the mix of operations of the run phase.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// YCSB A, update heavy: 50 % reads, 50 % updates.
    A,
    /// YCSB B, read mostly: 95 % reads, 5 % updates.
    B,
    /// YCSB C, read only.
    C,
    /// YCSB D, read latest: 95 % reads (of recent keys), 5 % inserts.
    D,
    /// YCSB F: 50 % reads, 50 % read-modify-writes (the write carries the
    /// read's context).
    F,
    /// Updates only.
    Write,
    /// Deletes only.
    Delete,
}

impl Workload {
    /// YCSB's request distribution for the workload (`latest` for D,
    /// else `zipfian`).
    pub fn default_distribution(self) -> Distribution {
        match self {
            Workload::D => Distribution::Latest,
            _ => Distribution::Zipfian,
        }
    }

    /// (operation, proportion) pairs summing to 1.
    fn mix(self) -> &'static [(OpKind, f64)] {
        match self {
            Workload::A => &[(OpKind::Read, 0.5), (OpKind::Update, 0.5)],
            Workload::B => &[(OpKind::Read, 0.95), (OpKind::Update, 0.05)],
            Workload::C => &[(OpKind::Read, 1.0)],
            Workload::D => &[(OpKind::Read, 0.95), (OpKind::Insert, 0.05)],
            Workload::F => &[(OpKind::Read, 0.5), (OpKind::ReadModifyWrite, 0.5)],
            Workload::Write => &[(OpKind::Update, 1.0)],
            Workload::Delete => &[(OpKind::Delete, 1.0)],
        }
    }
}

/// An operation kind; each has its own latency histogram and error counts.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Read,
    Update,
    Insert,
    #[serde(rename = "rmw")]
    ReadModifyWrite,
    Delete,
}

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [OpKind; 5] = [
        OpKind::Read,
        OpKind::Update,
        OpKind::Insert,
        OpKind::ReadModifyWrite,
        OpKind::Delete,
    ];

    /// The name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Insert => "insert",
            OpKind::ReadModifyWrite => "rmw",
            OpKind::Delete => "delete",
        }
    }

    /// Index into [`OpKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One operation to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    pub key: String,
    /// The value for updates, inserts and read-modify-writes.
    pub value: Option<Vec<u8>>,
}

/// The largest value size a run takes, in bytes (64 MiB; a Chorus node
/// takes 8 MiB by default).
pub const MAX_VALUE_SIZE: usize = 64 << 20;

/// Value sizes in bytes, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ValueSize {
    pub min: usize,
    pub max: usize,
}

impl std::str::FromStr for ValueSize {
    type Err = String;

    /// `N` or `MIN..MAX` (inclusive), in bytes.
    fn from_str(text: &str) -> Result<ValueSize, String> {
        let parse = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("invalid value size {text:?}: expected N or MIN..MAX bytes"))
        };
        let (min, max) = match text.split_once("..") {
            Some((min, max)) => (parse(min)?, parse(max)?),
            None => {
                let n = parse(text)?;
                (n, n)
            }
        };
        if min > max {
            return Err(format!("invalid value size {text:?}: MIN above MAX"));
        }
        if max > MAX_VALUE_SIZE {
            return Err(format!(
                "invalid value size {text:?}: at most {MAX_VALUE_SIZE} bytes (64 MiB)"
            ));
        }
        Ok(ValueSize { min, max })
    }
}

/// The key of record number `n` (YCSB names keys `user<number>`).
pub fn key_name(n: u64) -> String {
    format!("user{n}")
}

/// A value of a size within `size`, of printable bytes.
pub fn make_value<R: Rng + ?Sized>(rng: &mut R, size: ValueSize) -> Vec<u8> {
    let len = rng.random_range(size.min..=size.max);
    (0..len).map(|_| rng.random_range(b'a'..=b'z')).collect()
}

/// The operations one task issues, reproducible from the seed, the task's
/// number and the task count. Inserts of task `t` of `T` take key numbers
/// `records + t`, `records + t + T`, …, so no two tasks insert the same key
/// and the stream does not depend on how tasks interleave. Other
/// operations choose among the keys the task knows exist: the `records`
/// loaded ones and its own inserts, newest last (`latest` counts back from
/// its newest insert).
#[derive(Debug)]
pub struct OpStream {
    workload: Workload,
    chooser: KeyChooser,
    rng: ChaCha8Rng,
    records: u64,
    task: u64,
    tasks: u64,
    inserted: u64,
    value_size: ValueSize,
}

impl OpStream {
    /// The stream of task `task` of `tasks`.
    pub fn new(
        workload: Workload,
        distribution: Distribution,
        records: u64,
        value_size: ValueSize,
        seed: u64,
        task: u64,
        tasks: u64,
    ) -> OpStream {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(task);
        OpStream {
            workload,
            chooser: KeyChooser::new(distribution, records),
            rng,
            records,
            task,
            tasks: tasks.max(1),
            inserted: 0,
            value_size,
        }
    }

    /// The next operation.
    pub fn next_op(&mut self) -> Op {
        let roll: f64 = self.rng.random();
        let mut kind = OpKind::Read;
        let mut acc = 0.0;
        for &(candidate, share) in self.workload.mix() {
            kind = candidate;
            acc += share;
            if roll < acc {
                break;
            }
        }
        let number = if kind == OpKind::Insert {
            let n = self.records + self.task + self.inserted * self.tasks;
            self.inserted += 1;
            n
        } else {
            // The keys this task knows exist: the loaded ones, then its own
            // inserts, newest last. (Other tasks' inserts may not have
            // happened yet, so reads never choose them.)
            let known = self.records + self.inserted;
            let n = self
                .chooser
                .next(&mut self.rng, known, known - 1)
                .min(known - 1);
            if n < self.records {
                n
            } else {
                self.records + self.task + (n - self.records) * self.tasks
            }
        };
        let value = match kind {
            OpKind::Update | OpKind::Insert | OpKind::ReadModifyWrite => {
                Some(make_value(&mut self.rng, self.value_size))
            }
            OpKind::Read | OpKind::Delete => None,
        };
        Op {
            kind,
            key: key_name(number),
            value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(seed: u64) -> Vec<Op> {
        let size = ValueSize { min: 4, max: 8 };
        let mut stream = OpStream::new(Workload::A, Distribution::Zipfian, 100, size, seed, 2, 4);
        (0..200).map(|_| stream.next_op()).collect()
    }

    #[test]
    fn a_seeded_stream_is_reproducible() {
        assert_eq!(ops(42), ops(42));
        assert_ne!(ops(42), ops(43));
    }

    #[test]
    fn workload_a_is_half_reads() {
        let reads = ops(1).iter().filter(|op| op.kind == OpKind::Read).count();
        assert!((70..130).contains(&reads), "{reads}");
    }

    #[test]
    fn inserts_of_different_tasks_take_different_keys() {
        let size = ValueSize { min: 1, max: 1 };
        let keys = |task| {
            let mut stream = OpStream::new(Workload::D, Distribution::Latest, 10, size, 5, task, 2);
            (0..400)
                .map(|_| stream.next_op())
                .filter(|op| op.kind == OpKind::Insert)
                .map(|op| op.key)
                .collect::<Vec<_>>()
        };
        let (a, b) = (keys(0), keys(1));
        assert!(!a.is_empty() && !b.is_empty());
        assert!(a.iter().all(|k| !b.contains(k)));
    }

    #[test]
    fn reads_choose_only_loaded_keys_and_the_tasks_own_inserts() {
        let size = ValueSize { min: 1, max: 1 };
        for distribution in [Distribution::Latest, Distribution::Uniform] {
            let mut stream = OpStream::new(Workload::D, distribution, 10, size, 3, 1, 4);
            let mut inserted = std::collections::BTreeSet::new();
            for _ in 0..2000 {
                let op = stream.next_op();
                if op.kind == OpKind::Insert {
                    inserted.insert(op.key);
                } else {
                    let n: u64 = op.key["user".len()..].parse().unwrap();
                    assert!(n < 10 || inserted.contains(&op.key), "{op:?}");
                }
            }
            assert!(inserted.len() > 50);
        }
    }

    #[test]
    fn value_sizes_parse() {
        assert_eq!("100".parse(), Ok(ValueSize { min: 100, max: 100 }));
        assert_eq!("10..20".parse(), Ok(ValueSize { min: 10, max: 20 }));
        assert!("20..10".parse::<ValueSize>().is_err());
        assert!("x".parse::<ValueSize>().is_err());
        assert!("1..100000000".parse::<ValueSize>().is_err());
    }
}
