//! Picking the tenants a rollout moves.
//!
//! A percentage cohort must pick the same tenants every time for the same migration, on every
//! machine and every Rust version, and a 10% cohort must be contained in the 20% one so that
//! widening a canary never drops a tenant from it. So each tenant gets a fixed bucket in
//! `0..10_000` from a hash that Ferry defines itself (FNV-1a, then a 64-bit finalizer), and a
//! cohort of `p` percent is the buckets below `p * 100`. The bucket is computed once, when the
//! tenant is registered, and stored, so the store can select a cohort with an index.

use crate::id::{MigrationId, TenantId};

/// Buckets per 100%: percentages have two decimals of resolution.
pub const BUCKETS: u32 = 10_000;

/// Which tenants a rollout applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cohort {
    /// Exactly these tenants.
    Explicit(Vec<TenantId>),
    /// The tenants whose stable hash bucket falls below the percentage.
    Percent(Percent),
    /// The `n` tenants with the fewest rows (ties broken by tenant id).
    SmallestFirst(u64),
    /// Every tenant of the migration.
    All,
}

/// A percentage with two decimals, stored as basis points (0..=10_000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Percent(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CohortError {
    #[error("percentage {0:?} is not a number between 0 and 100 with at most two decimals")]
    BadPercent(String),
}

impl Percent {
    pub fn from_basis_points(bp: u32) -> Option<Percent> {
        (bp <= BUCKETS).then_some(Percent(bp))
    }

    pub fn basis_points(self) -> u32 {
        self.0
    }

    /// Parses `"10"`, `"2.5"`, `"0.01"`, `"100"` (an optional trailing `%` is accepted).
    pub fn parse(input: &str) -> Result<Percent, CohortError> {
        let bad = || CohortError::BadPercent(input.to_owned());
        let s = input.trim().trim_end_matches('%');
        let (whole, frac) = match s.split_once('.') {
            Some((_, "")) => return Err(bad()),
            Some(parts) => parts,
            None => (s, ""),
        };
        if whole.is_empty() || frac.len() > 2 || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let whole: u32 = whole.parse().map_err(|_| bad())?;
        let frac: u32 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
        whole
            .checked_mul(100)
            .and_then(|w| w.checked_add(frac))
            .and_then(Percent::from_basis_points)
            .ok_or_else(bad)
    }
}

impl std::fmt::Display for Percent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:02}%", self.0 / 100, self.0 % 100)
    }
}

/// The tenant's stable bucket in `0..BUCKETS` for this migration. Including the migration
/// means each migration gets an independent canary, not always the same unlucky tenants.
pub fn hash_bucket(migration: &MigrationId, tenant: &TenantId) -> u32 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    let bytes = migration
        .as_str()
        .bytes()
        .chain(std::iter::once(0))
        .chain(tenant.as_str().bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    // FNV's low bits mix poorly for short, similar inputs ("t1", "t2"); a finalizer spreads
    // every input bit over the whole word before the modulo.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    u32::try_from(h % u64::from(BUCKETS)).expect("a value below 10_000 fits in u32")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mig(s: &str) -> MigrationId {
        MigrationId::new(s).unwrap()
    }
    fn tenant(i: usize) -> TenantId {
        TenantId::new(format!("t{i}")).unwrap()
    }

    #[test]
    fn percent_parses_and_refuses() {
        assert_eq!(Percent::parse("10").unwrap().basis_points(), 1000);
        assert_eq!(Percent::parse("2.5%").unwrap().basis_points(), 250);
        assert_eq!(Percent::parse("0.01").unwrap().basis_points(), 1);
        assert_eq!(Percent::parse("100").unwrap().basis_points(), 10_000);
        assert_eq!(Percent::parse("12.34").unwrap().to_string(), "12.34%");
        for bad in [
            "",
            "-1",
            "100.01",
            "1.234",
            "ten",
            "1e2",
            ".5",
            "5.",
            "99999999999",
        ] {
            assert!(Percent::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    /// Pinned values: changing the hash would silently reshuffle every running canary.
    #[test]
    fn buckets_are_pinned() {
        let m = mig("orders_tiering");
        let got: Vec<u32> = (0..5).map(|i| hash_bucket(&m, &tenant(i))).collect();
        expect_test::expect!["[2646, 8823, 1918, 3814, 3451]"].assert_eq(&format!("{got:?}"));
    }

    #[test]
    fn buckets_are_spread_evenly() {
        let m = mig("spread");
        let n = 100_000;
        let in_ten_percent = (0..n)
            .filter(|&i| hash_bucket(&m, &tenant(i)) < 1000)
            .count();
        // 10% of 100k with a binomial standard deviation of ~95: allow 5 sigma.
        assert!(
            (9_525..=10_475).contains(&in_ten_percent),
            "{in_ten_percent} tenants in a 10% cohort of {n}"
        );
    }

    #[test]
    fn migrations_get_independent_cohorts() {
        let (a, b) = (mig("first"), mig("second"));
        let both = (0..10_000)
            .filter(|&i| hash_bucket(&a, &tenant(i)) < 1000 && hash_bucket(&b, &tenant(i)) < 1000)
            .count();
        // Independent 10% cohorts overlap in about 1% of tenants.
        assert!((50..=150).contains(&both), "{both} tenants in both cohorts");
    }
}
