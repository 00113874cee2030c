//! [`CategoryCounts`]: bounded, mergeable counts of categorical values (class labels,
//! categorical features).
//!
//! At most `cap` distinct categories are tracked (default [`DEFAULT_CATEGORY_CAP`]); values of
//! any other category are counted in [`CategoryCounts::other`]. Guarantees:
//! - the total (tracked counts + other) is always exact;
//! - with at most `cap` distinct categories in the merged stream every count is exact, and
//!   merging split streams gives exactly the counts of the whole stream;
//! - beyond `cap`, a tracked category's count is exact for the values seen after it was first
//!   admitted (the first `cap` categories of a stream are admitted); a merge keeps the `cap`
//!   largest counts (ties: smaller label) and folds the rest into `other`.
//!
//! Memory: at most `cap` entries of (label, u64): 16 bytes per integer label and
//! ≤ [`MAX_LABEL_BYTES`] + 40 bytes per string label, plus hash-table slack (< 2×): with the
//! default cap of 64 string labels, under 14 KiB.

use std::collections::HashMap;

/// Default number of distinct categories tracked per feature or output.
pub const DEFAULT_CATEGORY_CAP: usize = 64;

/// Longest string label kept, in bytes; longer labels are cut (at a char boundary).
pub const MAX_LABEL_BYTES: usize = 64;

/// One category: an integer (INT64 labels, integral numeric categorical features) or a string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CategoryLabel {
    /// An integer label.
    Int(i64),
    /// A string label (at most [`MAX_LABEL_BYTES`]).
    Str(String),
}

/// Bounded counts of categories with an "other" bucket.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CategoryCounts {
    cap: usize,
    ints: HashMap<i64, u64>,
    strs: HashMap<Box<str>, u64>,
    other: u64,
}

fn cut(label: &str) -> &str {
    if label.len() <= MAX_LABEL_BYTES {
        return label;
    }
    let mut end = MAX_LABEL_BYTES;
    while !label.is_char_boundary(end) {
        end -= 1;
    }
    &label[..end]
}

impl CategoryCounts {
    /// Heap memory held, estimated from the maps' capacities (a control byte per slot) and the
    /// labels' bytes.
    pub fn heap_bytes(&self) -> usize {
        let slot = |kv: usize| kv + 1;
        self.ints.capacity() * slot(std::mem::size_of::<(i64, u64)>())
            + self.strs.capacity() * slot(std::mem::size_of::<(Box<str>, u64)>())
            + self.strs.keys().map(|k| k.len()).sum::<usize>()
    }

    /// Empty counts tracking at most `cap` categories.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            ..Self::default()
        }
    }

    /// The configured cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Number of tracked categories.
    pub fn len(&self) -> usize {
        self.ints.len() + self.strs.len()
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    fn full(&self) -> bool {
        self.len() >= self.cap
    }

    /// Counts one integer label (no allocation once the label is tracked).
    #[inline]
    pub fn add_int(&mut self, label: i64) {
        if let Some(c) = self.ints.get_mut(&label) {
            *c += 1;
        } else if self.full() {
            self.other += 1;
        } else {
            self.ints.insert(label, 1);
        }
    }

    /// Counts one string label (allocates only when a new label is admitted).
    #[inline]
    pub fn add_str(&mut self, label: &str) {
        let label = cut(label);
        if let Some(c) = self.strs.get_mut(label) {
            *c += 1;
        } else if self.full() {
            self.other += 1;
        } else {
            self.strs.insert(label.into(), 1);
        }
    }

    /// Counts one value of no trackable category (e.g. a non-integral categorical number).
    #[inline]
    pub fn add_other(&mut self) {
        self.other += 1;
    }

    fn add_count(&mut self, label: CategoryLabel, count: u64) {
        match label {
            CategoryLabel::Int(i) => *self.ints.entry(i).or_default() += count,
            CategoryLabel::Str(s) => *self.strs.entry(cut(&s).into()).or_default() += count,
        }
    }

    /// Folds in `other`, then keeps the `cap` largest categories.
    pub fn merge(&mut self, other: &CategoryCounts) {
        for (label, count) in other.counts() {
            self.add_count(label, count);
        }
        self.other += other.other;
        self.enforce_cap();
    }

    fn enforce_cap(&mut self) {
        if self.len() <= self.cap {
            return;
        }
        let mut all = self.counts();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        self.ints.clear();
        self.strs.clear();
        let dropped: u64 = all[self.cap..].iter().map(|(_, c)| *c).sum();
        all.truncate(self.cap);
        for (label, count) in all {
            self.add_count(label, count);
        }
        self.other += dropped;
    }

    /// Rebuilds counts from their parts (as sent over the wire); keeps the `cap` largest.
    pub fn from_parts(
        cap: usize,
        counts: impl IntoIterator<Item = (CategoryLabel, u64)>,
        other: u64,
    ) -> Self {
        let mut c = Self::new(cap);
        for (label, count) in counts {
            c.add_count(label, count);
        }
        c.other = other;
        c.enforce_cap();
        c
    }

    /// Tracked categories and their counts, largest first (ties: smaller label first).
    pub fn counts(&self) -> Vec<(CategoryLabel, u64)> {
        let mut v: Vec<(CategoryLabel, u64)> = self
            .ints
            .iter()
            .map(|(k, c)| (CategoryLabel::Int(*k), *c))
            .chain(
                self.strs
                    .iter()
                    .map(|(k, c)| (CategoryLabel::Str(k.to_string()), *c)),
            )
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// The count of one category (0 when untracked).
    pub fn get(&self, label: &CategoryLabel) -> u64 {
        match label {
            CategoryLabel::Int(i) => self.ints.get(i).copied().unwrap_or(0),
            CategoryLabel::Str(s) => self.strs.get(cut(s)).copied().unwrap_or(0),
        }
    }

    /// Values counted outside the tracked categories.
    pub fn other(&self) -> u64 {
        self.other
    }

    /// All values counted (tracked + other).
    pub fn total(&self) -> u64 {
        self.ints.values().sum::<u64>() + self.strs.values().sum::<u64>() + self.other
    }

    /// Empties the counts, keeping the cap.
    pub fn reset(&mut self) {
        self.ints.clear();
        self.strs.clear();
        self.other = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_labels_are_cut_on_a_char_boundary() {
        let mut c = CategoryCounts::new(4);
        let long = "é".repeat(40); // 80 bytes
        c.add_str(&long);
        let (label, _) = &c.counts()[0];
        let CategoryLabel::Str(s) = label else {
            panic!("string label expected")
        };
        assert!(s.len() <= MAX_LABEL_BYTES && s.len() == 64);
        assert_eq!(c.get(&CategoryLabel::Str(long)), 1);
    }
}
