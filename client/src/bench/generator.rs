//! Key choosers, after YCSB's generators (`site.ycsb.generator`): uniform,
//! Zipfian (Gray et al., "Quickly generating billion-record synthetic
//! databases", SIGMOD 1994, as YCSB's `ZipfianGenerator` implements it),
//! scrambled Zipfian (YCSB's `ScrambledZipfianGenerator`: popular items
//! spread over the key space by FNV-1a hashing) and latest (YCSB's
//! `SkewedLatestGenerator`: the most recently inserted items are the most
//! popular). Randomness comes in as an argument, so a seeded RNG gives the
//! same sequence every run.

use rand::Rng;

/// YCSB's Zipfian constant (`zipfianconstant`, default 0.99).
pub const ZIPFIAN_CONSTANT: f64 = 0.99;

/// The item count YCSB's scrambled Zipfian draws from before hashing
/// (`ScrambledZipfianGenerator.ITEM_COUNT`).
const SCRAMBLED_ITEM_COUNT: u64 = 10_000_000_000;
/// zeta(10^10, 0.99), precomputed by YCSB (`ScrambledZipfianGenerator.ZETAN`).
const SCRAMBLED_ZETAN: f64 = 26.469_028_201_783_02;

const FNV_OFFSET_BASIS_64: u64 = 0xCBF2_9CE4_8422_2325;
const FNV_PRIME_64: u64 = 1_099_511_628_211;

/// YCSB's 64-bit FNV hash of a number (`Utils.fnvhash64`): FNV-1a over its
/// eight little-endian bytes, made non-negative as a Java `long`.
pub fn fnv_hash64(value: u64) -> u64 {
    let mut hash = FNV_OFFSET_BASIS_64;
    let mut value = value;
    for _ in 0..8 {
        hash ^= value & 0xff;
        hash = hash.wrapping_mul(FNV_PRIME_64);
        value >>= 8;
    }
    (hash as i64).unsigned_abs()
}

/// zeta(n, theta) = sum over i in 1..=n of 1 / i^theta, continued from
/// `from` items whose sum is `partial`.
fn zeta(from: u64, to: u64, theta: f64, partial: f64) -> f64 {
    let mut sum = partial;
    for i in from..to {
        sum += 1.0 / ((i + 1) as f64).powf(theta);
    }
    sum
}

/// Zipfian over `0..items`: item 0 is the most popular, item i is drawn
/// with probability proportional to 1 / (i + 1)^theta.
#[derive(Debug, Clone)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    zeta2theta: f64,
    eta: f64,
}

impl Zipfian {
    /// Over `0..items` (at least 1) with YCSB's constant.
    pub fn new(items: u64) -> Zipfian {
        let items = items.max(1);
        let zetan = zeta(0, items, ZIPFIAN_CONSTANT, 0.0);
        Zipfian::with_zetan(items, ZIPFIAN_CONSTANT, zetan)
    }

    fn with_zetan(items: u64, theta: f64, zetan: f64) -> Zipfian {
        let zeta2theta = zeta(0, 2, theta, 0.0);
        let mut zipfian = Zipfian {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            zeta2theta,
            eta: 0.0,
        };
        zipfian.eta = zipfian.eta_for(items);
        zipfian
    }

    fn eta_for(&self, items: u64) -> f64 {
        (1.0 - (2.0 / items as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta2theta / self.zetan)
    }

    /// The item count.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// The probability of item `i` (for tests and reports).
    pub fn probability(&self, i: u64) -> f64 {
        1.0 / ((i + 1) as f64).powf(self.theta) / self.zetan
    }

    /// Grows the item count (YCSB recomputes zeta incrementally).
    pub fn grow_to(&mut self, items: u64) {
        if items > self.items {
            self.zetan = zeta(self.items, items, self.theta, self.zetan);
            self.items = items;
            self.eta = self.eta_for(items);
        }
    }

    /// The next item, in `0..items`.
    pub fn next<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let value = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        value.min(self.items - 1)
    }
}

/// How keys are chosen; see the module doc.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Uniform,
    Zipfian,
    Latest,
}

/// Chooses key numbers for one task.
#[derive(Debug, Clone)]
pub enum KeyChooser {
    Uniform,
    /// YCSB's scrambled Zipfian over the whole key count.
    Zipfian(Zipfian),
    /// Counts back from the newest key by a Zipfian offset.
    Latest(Zipfian),
}

impl KeyChooser {
    /// A chooser over `0..records` keys.
    pub fn new(distribution: Distribution, records: u64) -> KeyChooser {
        match distribution {
            Distribution::Uniform => KeyChooser::Uniform,
            Distribution::Zipfian => KeyChooser::Zipfian(Zipfian::with_zetan(
                SCRAMBLED_ITEM_COUNT,
                ZIPFIAN_CONSTANT,
                SCRAMBLED_ZETAN,
            )),
            Distribution::Latest => KeyChooser::Latest(Zipfian::new(records)),
        }
    }

    /// A key number below `count`; `latest` is the newest key (for
    /// [`Distribution::Latest`]).
    pub fn next<R: Rng + ?Sized>(&mut self, rng: &mut R, count: u64, latest: u64) -> u64 {
        let count = count.max(1);
        match self {
            KeyChooser::Uniform => rng.random_range(0..count),
            KeyChooser::Zipfian(zipfian) => fnv_hash64(zipfian.next(rng)) % count,
            KeyChooser::Latest(zipfian) => {
                zipfian.grow_to(count);
                latest.saturating_sub(zipfian.next(rng))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Pearson's chi-square statistic of observed counts against expected
    /// probabilities.
    fn chi_square(observed: &[u64], expected: &[f64]) -> f64 {
        let total: u64 = observed.iter().sum();
        observed
            .iter()
            .zip(expected)
            .map(|(&o, &p)| {
                let e = p * total as f64;
                (o as f64 - e).powi(2) / e
            })
            .sum()
    }

    /// The 0.999 quantile of chi-square with 19 degrees of freedom.
    const CHI2_19_999: f64 = 43.82;
    const ITEMS: u64 = 20;
    const DRAWS: usize = 100_000;

    /// The exact frequencies of YCSB's algorithm over `ITEMS` items. It is
    /// Gray et al.'s approximation: items 0 and 1 get exactly their Zipf
    /// share 1/(i+1)^theta / zeta(n); the others follow the inverse of
    /// `n (eta u - eta + 1)^alpha`, within ~10 % of their Zipf share.
    fn zipf_expected() -> Vec<f64> {
        let z = Zipfian::new(ITEMS);
        let n = ITEMS as f64;
        // The u at which the third branch reaches value v.
        let u_at = |v: f64| ((v / n).powf(1.0 / z.alpha) - 1.0 + z.eta) / z.eta;
        let start = (1.0 + 0.5f64.powf(z.theta)) / z.zetan;
        let mut expected: Vec<f64> = (0..ITEMS)
            .map(|v| {
                let lo = if v == 0 {
                    start
                } else {
                    u_at(v as f64).max(start)
                };
                let hi = if v == ITEMS - 1 {
                    1.0
                } else {
                    u_at((v + 1) as f64).min(1.0)
                };
                (hi - lo).max(0.0)
            })
            .collect();
        expected[0] += z.probability(0);
        expected[1] += z.probability(1);
        for (v, p) in expected.iter().enumerate() {
            let zipf = z.probability(v as u64);
            assert!(
                (p / zipf - 1.0).abs() < 0.15,
                "item {v}: {p} vs Zipf {zipf}"
            );
        }
        expected
    }

    #[test]
    fn zipfian_matches_its_expected_frequencies() {
        let zipfian = Zipfian::new(ITEMS);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut observed = vec![0u64; ITEMS as usize];
        for _ in 0..DRAWS {
            observed[zipfian.next(&mut rng) as usize] += 1;
        }
        let statistic = chi_square(&observed, &zipf_expected());
        assert!(
            statistic < CHI2_19_999,
            "chi-square {statistic} over {CHI2_19_999}: {observed:?}"
        );
    }

    /// The negative control: uniform draws fail the same test.
    #[test]
    fn uniform_fails_the_zipfian_test() {
        let mut chooser = KeyChooser::new(Distribution::Uniform, ITEMS);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut observed = vec![0u64; ITEMS as usize];
        for _ in 0..DRAWS {
            observed[chooser.next(&mut rng, ITEMS, ITEMS - 1) as usize] += 1;
        }
        let statistic = chi_square(&observed, &zipf_expected());
        assert!(statistic > CHI2_19_999, "chi-square {statistic}");
    }

    #[test]
    fn scrambled_zipfian_stays_in_range_and_is_skewed() {
        let mut chooser = KeyChooser::new(Distribution::Zipfian, 1000);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut counts = vec![0u64; 1000];
        for _ in 0..DRAWS {
            counts[chooser.next(&mut rng, 1000, 999) as usize] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        // The hottest key of a Zipfian(0.99) gets several percent of draws;
        // a uniform one would get about 0.1 %.
        assert!(counts[0] as f64 > 0.02 * DRAWS as f64, "{:?}", &counts[..5]);
    }

    #[test]
    fn latest_prefers_the_newest_keys() {
        let mut chooser = KeyChooser::new(Distribution::Latest, 100);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let newest = (0..10_000)
            .filter(|_| chooser.next(&mut rng, 100, 99) == 99)
            .count();
        assert!(newest > 1000, "{newest}");
    }
}
