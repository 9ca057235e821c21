//! A compressed update read in place, and folded lane by lane.

use serde::{Deserialize, Serialize};
use tg_types::view::{Lanes, bytes_borrowed};

use crate::topk::get_varint;

/// [`crate::Compressed`], borrowing its arrays from the frame (same wire form).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompressedView<'a> {
    /// Values the update stands for.
    pub len: u64,
    /// The encoding.
    #[serde(borrow)]
    pub body: BodyView<'a>,
}

/// [`crate::Body`], borrowed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BodyView<'a> {
    /// Sparse.
    TopK {
        /// LEB128 gaps.
        #[serde(with = "bytes_borrowed")]
        gaps: &'a [u8],
        /// Little-endian `f32` values.
        #[serde(with = "bytes_borrowed")]
        values: &'a [u8],
    },
    /// 8-bit blocks.
    Q8 {
        /// Values per scale.
        block: u32,
        /// Little-endian `f32` scales.
        #[serde(with = "bytes_borrowed")]
        scales: &'a [u8],
        /// Signed bytes.
        #[serde(with = "bytes_borrowed")]
        codes: &'a [u8],
    },
}

impl CompressedView<'_> {
    /// Checks that the arrays agree with `len` and with each other: indices
    /// strictly increasing and below `len`, gaps canonical and fully used,
    /// one code per value and one finite, non-negative scale per block.
    /// `len` itself is checked against the model by whoever folds.
    pub fn check(&self) -> Result<(), String> {
        match &self.body {
            BodyView::TopK { gaps, values } => {
                if !values.len().is_multiple_of(4) {
                    return Err("top-k values are not whole f32s".into());
                }
                let n = values.len() / 4;
                let (mut at, mut prev) = (0usize, None::<u64>);
                for i in 0..n {
                    let gap = get_varint(gaps, &mut at)
                        .ok_or_else(|| format!("top-k index {i} is not a canonical varint"))?;
                    let idx = match prev {
                        None => gap,
                        Some(_) if gap == 0 => {
                            return Err(format!("top-k index {i} repeats the previous one"));
                        }
                        Some(p) => p.checked_add(gap).ok_or("top-k index overflows")?,
                    };
                    if idx >= self.len {
                        return Err(format!("top-k index {idx} is past the {} values", self.len));
                    }
                    prev = Some(idx);
                }
                if at != gaps.len() {
                    return Err("top-k gaps hold more indices than values".into());
                }
                Ok(())
            }
            BodyView::Q8 {
                block,
                scales,
                codes,
            } => {
                if *block == 0 {
                    return Err("q8 block size is 0".into());
                }
                if codes.len() as u64 != self.len {
                    return Err(format!(
                        "q8 carries {} codes for {} values",
                        codes.len(),
                        self.len
                    ));
                }
                let blocks = codes.len().div_ceil(*block as usize);
                if scales.len() != blocks * 4 {
                    return Err(format!(
                        "q8 carries {} bytes of scales for {blocks} blocks",
                        scales.len()
                    ));
                }
                if scales
                    .chunks_exact(4)
                    .map(f32_at)
                    .any(|s| !(s.is_finite() && s >= 0.0))
                {
                    return Err("a q8 scale is negative or not finite".into());
                }
                Ok(())
            }
        }
    }
}

fn f32_at(c: &[u8]) -> f32 {
    f32::from_le_bytes([c[0], c[1], c[2], c[3]])
}

/// A checked compressed update laid out as the global model is (the wire form
/// carries no names: the model's layout is the round's).
pub struct Shaped<'v, 'l> {
    view: &'v CompressedView<'v>,
    layout: &'l [(String, Vec<usize>)],
}

impl<'v, 'l> Shaped<'v, 'l> {
    /// `view` (already [`CompressedView::check`]ed) over `layout`.
    pub fn new(view: &'v CompressedView<'v>, layout: &'l [(String, Vec<usize>)]) -> Self {
        Self { view, layout }
    }
}

impl Lanes for Shaped<'_, '_> {
    fn layout(&self) -> impl Iterator<Item = (&str, &[usize])> + '_ {
        self.layout.iter().map(|(n, s)| (n.as_str(), s.as_slice()))
    }

    fn num_lanes(&self) -> usize {
        usize::try_from(self.view.len).unwrap_or(usize::MAX)
    }

    #[inline]
    fn lanes(&self) -> impl Iterator<Item = f32> + '_ {
        let len = self.num_lanes();
        let mut iter = match &self.view.body {
            BodyView::TopK { gaps, values } => LaneIter::TopK {
                gaps,
                at: 0,
                values,
                next: None,
                started: false,
            },
            BodyView::Q8 {
                block,
                scales,
                codes,
            } => LaneIter::Q8 {
                block: *block as usize,
                scales,
                codes,
            },
        };
        (0..len).map(move |j| iter.value(j))
    }
}

/// Decodes one lane at a time, in order.
enum LaneIter<'a> {
    TopK {
        gaps: &'a [u8],
        at: usize,
        values: &'a [u8],
        /// (index, position in values) of the next sent coordinate.
        next: Option<(usize, usize)>,
        started: bool,
    },
    Q8 {
        block: usize,
        scales: &'a [u8],
        codes: &'a [u8],
    },
}

impl LaneIter<'_> {
    #[inline]
    fn value(&mut self, j: usize) -> f32 {
        match self {
            Self::TopK {
                gaps,
                at,
                values,
                next,
                started,
            } => {
                if !*started {
                    *started = true;
                    *next = get_varint(gaps, at).map(|g| (g as usize, 0));
                }
                match *next {
                    Some((i, k)) if i == j => {
                        let v = values.get(4 * k..4 * k + 4).map_or(0.0, f32_at);
                        *next = if 4 * (k + 1) < values.len() {
                            get_varint(gaps, at).map(|g| (i + g as usize, k + 1))
                        } else {
                            None
                        };
                        v
                    }
                    _ => 0.0,
                }
            }
            Self::Q8 {
                block,
                scales,
                codes,
            } => {
                let code = codes.get(j).map_or(0, |&c| c as i8);
                let b = j / *block;
                let scale = scales.get(4 * b..4 * b + 4).map_or(0.0, f32_at);
                f32::from(code) * scale
            }
        }
    }
}
