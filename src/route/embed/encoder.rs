//! A BERT encoder (post-LayerNorm, GELU, mean pooling) with its matrix products in int8
//! (`int8.rs`) and the rest in f32. A pass takes one or several texts with their tokens laid end to
//! end: the products (most of the work) run over all tokens at once, so each weight matrix is read
//! once per pass, while attention runs per text, so there is no padding and no attention mask. The
//! router embeds one prompt per request; start-up batches the examples (`e5.rs`).

use super::int8::{Aligned, Kernel, MAGIC, QuantLinear, QuantRows, kernel};

/// Token means per text: after the middle layer and after the last.
pub const POOLED_LAYERS: usize = 2;

/// Adds each text's mean token vector of `x` into block `block` of its `pooled` vector.
fn mean_pool(x: &[f32], lengths: &[usize], hidden: usize, pooled: &mut [Vec<f32>], block: usize) {
    let mut first = 0;
    for (&tokens, out) in lengths.iter().zip(pooled) {
        let out = &mut out[block * hidden..(block + 1) * hidden];
        for token in x[first * hidden..(first + tokens) * hidden].chunks_exact(hidden) {
            out.iter_mut().zip(token).for_each(|(p, v)| *p += v);
        }
        out.iter_mut().for_each(|p| *p /= tokens.max(1) as f32);
        first += tokens;
    }
}

pub struct Layer {
    /// Query, key and value stacked: `3 × hidden` outputs from one product.
    pub qkv: QuantLinear,
    pub attention_out: QuantLinear,
    pub attention_norm: Norm,
    pub intermediate: QuantLinear,
    pub output: QuantLinear,
    pub output_norm: Norm,
}

pub struct Norm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

pub struct Encoder {
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
    eps: f32,
}

impl Encoder {
    /// The attention is register-blocked for heads 32 wide (every BERT-small: 384 / 12); other
    /// shapes are refused here rather than run by a slower path no model of ours exercises.
    pub fn new(layers: Vec<Layer>, heads: usize, hidden: usize, eps: f32) -> Result<Self, String> {
        if heads == 0 || hidden != heads * HEAD {
            return Err(format!(
                "unsupported attention shape: {heads} heads over {hidden} values (heads must be {HEAD} wide)"
            ));
        }
        Ok(Self { layers, heads, hidden, eps })
    }

    /// Runs the layers over `x` (`tokens × hidden` embeddings, already normalised), the tokens of
    /// texts of `lengths` tokens laid end to end, and returns for each text the means of its token
    /// vectors after the middle layer and after the last, one after the other (`2 × hidden`, not
    /// normalised). The middle layer still carries the wording (the verbs that say what is to be
    /// done), the last mostly the topic: together they route better than the last alone (cross-
    /// validated over the router's examples 91.8 % → 94.1 %, see `linear.rs`).
    pub fn forward(&self, x: Vec<f32>, lengths: &[usize]) -> Vec<Vec<f32>> {
        // Buffers are kept per thread between passes: fresh ones cost a page fault and a zeroed page
        // every 4 KiB (~15 % of embedding the examples at start-up). The largest pass (16 example
        // texts of at most `max_tokens`) keeps a few MiB on the threads that ran it.
        thread_local! {
            static SCRATCH: std::cell::RefCell<Scratch> = Default::default();
        }
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => self.forward_in(x, lengths, &mut scratch),
            // Not reentrant in practice; fresh buffers if it ever is.
            Err(_) => self.forward_in(x, lengths, &mut Scratch::default()),
        })
    }

    /// Dispatches to the pass compiled for this CPU (outside any closure: a closure is compiled
    /// without the CPU features of the function around it).
    fn forward_in(&self, x: Vec<f32>, lengths: &[usize], scratch: &mut Scratch) -> Vec<Vec<f32>> {
        match kernel() {
            // SAFETY: `kernel()` reports these only when the CPU has the features the functions enable.
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            Kernel::Vnni512 | Kernel::Amx => unsafe { self.forward_avx512(x, lengths, scratch) },
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            Kernel::Avx2 => unsafe { self.forward_avx2(x, lengths, scratch) },
            _ => self.forward_int8::<false>(x, lengths, scratch),
        }
    }

    // The whole pass, not only the products, is compiled for the CPU's vector width: attention,
    // GELU and LayerNorm are a third of the time in baseline x86-64 (SSE2) code.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    fn forward_avx512(&self, x: Vec<f32>, lengths: &[usize], scratch: &mut Scratch) -> Vec<Vec<f32>> {
        self.forward_int8::<true>(x, lengths, scratch)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn forward_avx2(&self, x: Vec<f32>, lengths: &[usize], scratch: &mut Scratch) -> Vec<Vec<f32>> {
        self.forward_int8::<true>(x, lengths, scratch)
    }

    #[inline(always)]
    fn forward_int8<const FUSED: bool>(&self, x: Vec<f32>, lengths: &[usize], scratch: &mut Scratch) -> Vec<Vec<f32>> {
        let Scratch { buffers, products } = scratch;
        self.forward_with::<FUSED>(x, lengths, products, buffers)
    }

    /// The same pass with f32 products on the original weights (the tests' reference).
    #[cfg(test)]
    pub fn forward_exact(&self, x: Vec<f32>, lengths: &[usize]) -> Vec<Vec<f32>> {
        self.forward_with::<false>(x, lengths, &mut ExactProducts, &mut Buffers::default())
    }

    /// `products` computes `out = input Wᵀ + b` for each linear layer.
    #[inline(always)]
    fn forward_with<const FUSED: bool>(
        &self,
        mut x: Vec<f32>,
        lengths: &[usize],
        products: &mut impl Products,
        buffers: &mut Buffers,
    ) -> Vec<Vec<f32>> {
        let hidden = self.hidden;
        assert_eq!(lengths.iter().sum::<usize>() * hidden, x.len(), "token counts do not match the input");
        let Buffers { qkv, context, projected, intermediate, attention } = buffers;
        let middle = self.layers.len() / 2;
        let mut pooled: Vec<Vec<f32>> = lengths.iter().map(|_| vec![0f32; POOLED_LAYERS * hidden]).collect();
        for (index, layer) in self.layers.iter().enumerate() {
            products.product(&layer.qkv, &x, qkv);
            // Every head writes its columns of every token.
            context.resize(x.len(), 0.0);
            let mut first = 0;
            for &tokens in lengths {
                let (rows, out) = (&qkv[first * 3 * hidden..], &mut context[first * hidden..]);
                self.attend::<FUSED>(&rows[..tokens * 3 * hidden], tokens, &mut out[..tokens * hidden], attention);
                first += tokens;
            }
            products.product(&layer.attention_out, context, projected);
            add_norm(&mut x, projected, &layer.attention_norm, hidden, self.eps);
            products.product(&layer.intermediate, &x, intermediate);
            intermediate.iter_mut().for_each(|v| *v = gelu::<FUSED>(*v));
            products.product(&layer.output, intermediate, projected);
            add_norm(&mut x, projected, &layer.output_norm, hidden, self.eps);
            if index == middle {
                mean_pool(&x, lengths, hidden, &mut pooled, 0);
            }
        }
        mean_pool(&x, lengths, hidden, &mut pooled, 1);
        pooled
    }

    /// Scaled dot-product attention per head over one text's `qkv` (`tokens × 3·hidden`) into
    /// its `context` (`tokens × hidden`).
    /// Per head, queries, transposed keys and values are copied out (padded with zeros), then
    /// scores and outputs are computed for 4 queries × 16 keys (or × 32 output values) at a time,
    /// so every key or value loaded feeds 4 independent accumulations held in registers.
    #[inline(always)]
    fn attend<const FUSED: bool>(&self, qkv: &[f32], tokens: usize, context: &mut [f32], buffers: &mut Attention) {
        let hidden = self.hidden;
        let scale = 1.0 / (HEAD as f32).sqrt();
        let (rows, columns) = (tokens.next_multiple_of(QUERIES), tokens.next_multiple_of(KEYS));
        let Attention { queries, keys, values, scores, totals } = buffers;
        queries.clear();
        queries.resize(rows, [0.0; HEAD]);
        keys.clear();
        keys.resize(HEAD * columns, 0.0);
        values.clear();
        values.resize(columns, [0.0; HEAD]);
        scores.clear();
        scores.resize(rows * columns, 0.0);
        totals.resize(tokens, 0.0); // exactly one per real query: padding rows are skipped
        for head in 0..self.heads {
            let (q_at, k_at, v_at) = (head * HEAD, hidden + head * HEAD, 2 * hidden + head * HEAD);
            for (t, row) in qkv.chunks_exact(3 * hidden).enumerate() {
                queries[t].iter_mut().zip(&row[q_at..q_at + HEAD]).for_each(|(q, v)| *q = v * scale);
                for (e, k) in row[k_at..k_at + HEAD].iter().enumerate() {
                    keys[e * columns + t] = *k;
                }
                values[t].copy_from_slice(&row[v_at..v_at + HEAD]);
            }
            for (quad, out) in queries.as_chunks::<QUERIES>().0.iter().zip(scores.chunks_exact_mut(QUERIES * columns)) {
                for block in 0..columns / KEYS {
                    let acc = score_block::<FUSED>(quad, keys, columns, block);
                    for (r, a) in acc.iter().enumerate() {
                        out[r * columns + block * KEYS..][..KEYS].copy_from_slice(a);
                    }
                }
            }
            // Unnormalised: each output row is divided by its row's sum instead (32 values, not
            // `tokens` probabilities). The padding columns are set to -∞ so the whole row runs in
            // 16-lane steps: a scalar tail of up to 15 exponentials per row made a 63-token pass
            // slower than a 64-token one. They come out as e^-87 (`fast_exp` clamps), below f32
            // rounding against the row's largest term, 1, and `weigh_values` never reads them.
            for (row, total) in scores.chunks_exact_mut(columns).zip(totals.iter_mut()).take(tokens) {
                row[tokens..].fill(f32::NEG_INFINITY);
                *total = exp_and_sum::<FUSED>(row, maximum(row));
            }
            for (quad, weights) in scores.chunks_exact(QUERIES * columns).enumerate() {
                let acc = weigh_values::<FUSED>(weights, values, columns, tokens);
                for (r, a) in acc.iter().enumerate() {
                    let t = quad * QUERIES + r;
                    if let Some(total) = totals.get(t) {
                        let inverse = 1.0 / total;
                        let out = &mut context[t * hidden + q_at..][..HEAD];
                        out.iter_mut().zip(a).for_each(|(o, v)| *o = v * inverse);
                    }
                }
            }
        }
    }
}

/// Head width the register-blocked attention handles (every BERT-small: 384 / 12, 768 / 24…).
const HEAD: usize = 32;
/// Keys scored per register block.
const KEYS: usize = 16;
/// Queries handled together: each key or value loaded feeds this many accumulations.
const QUERIES: usize = 4;

/// Scores of 4 queries against keys `16·block..16·block + 16` (`keys` transposed, `columns` per
/// row). Fixed-size arrays and index loops: the shape the compiler reliably turns into one vector
/// register per query (iterator chains here were sometimes left scalar, 1.5× slower passes).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // index loops on purpose (see above)
fn score_block<const FUSED: bool>(
    quad: &[[f32; HEAD]; QUERIES],
    keys: &[f32],
    columns: usize,
    block: usize,
) -> [[f32; KEYS]; QUERIES] {
    let mut acc = [[0f32; KEYS]; QUERIES];
    for e in 0..HEAD {
        let Some(key) = keys.get(e * columns + block * KEYS..).and_then(|k| k.first_chunk::<KEYS>()) else { break };
        for r in 0..QUERIES {
            let q = quad[r][e];
            for i in 0..KEYS {
                acc[r][i] = madd::<FUSED>(q, key[i], acc[r][i]);
            }
        }
    }
    acc
}

/// `Σ_s p[r][s] · value[s]` for the 4 probability rows in `weights` (`columns` apart).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn weigh_values<const FUSED: bool>(
    weights: &[f32],
    values: &[[f32; HEAD]],
    columns: usize,
    tokens: usize,
) -> [[f32; HEAD]; QUERIES] {
    let mut acc = [[0f32; HEAD]; QUERIES];
    let rows: [&[f32]; QUERIES] =
        std::array::from_fn(|r| weights.get(r * columns..r * columns + tokens).unwrap_or(&[]));
    for (s, value) in values.iter().enumerate().take(tokens) {
        for r in 0..QUERIES {
            let p = rows[r].get(s).copied().unwrap_or(0.0);
            for i in 0..HEAD {
                acc[r][i] = madd::<FUSED>(p, value[i], acc[r][i]);
            }
        }
    }
    acc
}

/// How a pass computes one linear layer. A trait with an always-inlined method rather than a
/// closure: a closure is compiled as its own function, without the CPU features of the pass that
/// calls it, and whether the compiler inlines it changed the 64-token pass by ~50 %.
trait Products {
    fn product(&mut self, linear: &QuantLinear, input: &[f32], out: &mut Vec<f32>);
}

#[derive(Default)]
struct Int8Products {
    quantized: QuantRows,
    sums: Aligned<i32>,
}

impl Products for Int8Products {
    #[inline(always)]
    fn product(&mut self, linear: &QuantLinear, input: &[f32], out: &mut Vec<f32>) {
        self.quantized.quantize(input, linear.inputs());
        linear.forward(&self.quantized, &mut self.sums, out);
    }
}

#[cfg(test)]
struct ExactProducts;

#[cfg(test)]
impl Products for ExactProducts {
    fn product(&mut self, linear: &QuantLinear, input: &[f32], out: &mut Vec<f32>) {
        linear.forward_exact(input, out);
    }
}

#[derive(Default)]
struct Scratch {
    buffers: Buffers,
    products: Int8Products,
}

/// A pass's intermediate results, reused from layer to layer (and pass to pass).
#[derive(Default)]
struct Buffers {
    qkv: Vec<f32>,
    context: Vec<f32>,
    projected: Vec<f32>,
    intermediate: Vec<f32>,
    attention: Attention,
}

/// Buffers the attention step reuses from layer to layer.
#[derive(Default)]
struct Attention {
    /// One head's queries (scaled), keys transposed (`HEAD × columns`), values, and scores
    /// (`rows × columns`, then probabilities), zero-padded.
    queries: Vec<[f32; HEAD]>,
    keys: Vec<f32>,
    values: Vec<[f32; HEAD]>,
    scores: Vec<f32>,
    /// Per query: the sum of its row's exponentials.
    totals: Vec<f32>,
}

/// `x = LayerNorm(x + y)` row by row.
#[inline(always)]
fn add_norm(x: &mut [f32], y: &[f32], norm: &Norm, hidden: usize, eps: f32) {
    for (row, add) in x.chunks_exact_mut(hidden).zip(y.chunks_exact(hidden)) {
        row.iter_mut().zip(add).for_each(|(a, b)| *a += b);
        layer_norm(row, &norm.weight, &norm.bias, eps);
    }
}

#[inline(always)]
pub fn layer_norm(row: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    let variance = sum_of_squares(row, mean) / n;
    let scale = 1.0 / (variance + eps).sqrt();
    for ((x, w), b) in row.iter_mut().zip(weight).zip(bias) {
        *x = (*x - mean) * scale * w + b;
    }
}

/// Sums with eight independent lanes, which the compiler turns into SIMD adds (a single running
/// sum cannot be reordered, so it would stay scalar).
#[inline(always)]
fn sum(values: &[f32]) -> f32 {
    let (chunks, rest) = values.as_chunks::<8>();
    let mut lanes = [0f32; 8];
    for chunk in chunks {
        lanes.iter_mut().zip(chunk).for_each(|(l, v)| *l += v);
    }
    lanes.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// `Σ (x - mean)²` in eight lanes.
#[inline(always)]
fn sum_of_squares(values: &[f32], mean: f32) -> f32 {
    let (chunks, rest) = values.as_chunks::<8>();
    let mut lanes = [0f32; 8];
    for chunk in chunks {
        lanes.iter_mut().zip(chunk).for_each(|(l, v)| *l += (v - mean) * (v - mean));
    }
    lanes.iter().sum::<f32>() + rest.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>()
}

/// The largest value, in sixteen lanes so it vectorizes (one AVX-512 register; attention rows are
/// often only 4 registers long, so wider lanes also mean fewer steps and a shorter tail).
#[inline(always)]
fn maximum(values: &[f32]) -> f32 {
    let larger = |m: f32, v: f32| if v > m { v } else { m };
    let (chunks, rest) = values.as_chunks::<16>();
    let mut lanes = [f32::MIN; 16];
    for chunk in chunks {
        lanes.iter_mut().zip(chunk).for_each(|(l, v)| *l = larger(*l, *v));
    }
    rest.iter().chain(&lanes).fold(f32::MIN, |m, v| larger(m, *v))
}

/// Replaces each value by `e^(v - peak)` and returns their sum, in one pass of sixteen lanes.
#[inline(always)]
fn exp_and_sum<const FUSED: bool>(values: &mut [f32], peak: f32) -> f32 {
    let (chunks, rest) = values.as_chunks_mut::<16>();
    let mut lanes = [0f32; 16];
    for chunk in chunks {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            *v = fast_exp::<FUSED>(*v - peak);
            *l += *v;
        }
    }
    let mut total = lanes.iter().sum::<f32>();
    for v in rest {
        *v = fast_exp::<FUSED>(*v - peak);
        total += *v;
    }
    total
}

/// `a·b + c`, as one fused instruction in the passes compiled with FMA (`FUSED`; half the
/// instructions of the attention and GELU loops) and as a multiply and an add elsewhere (without
/// the CPU feature, `mul_add` would be a libm call). Rust never fuses on its own.
#[inline(always)]
fn madd<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED { a.mul_add(b, c) } else { a * b + c }
}

/// BERT's GELU, `x·Φ(x)`, with erf from Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
#[inline(always)]
fn gelu<const FUSED: bool>(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = reciprocal::<FUSED>(madd::<FUSED>(0.327_591_1, z, 1.0));
    let poly = [-1.453_152_1, 1.421_413_7, -0.284_496_74, 0.254_829_6]
        .iter()
        .fold(1.061_405_4, |acc, c| madd::<FUSED>(acc, t, *c))
        * t;
    let erf = 1.0 - poly * fast_exp::<FUSED>(-z * z);
    0.5 * x * (1.0 + erf.copysign(x))
}

/// `1 / d` for `d ≥ 1` without a division (a vector divide was a fifth of GELU's time): a first
/// guess from the float's bits (within 12 %), then three Newton steps (error 12 % → 1.4 % → 2e-4 →
/// ~4e-8, below f32 rounding).
#[inline(always)]
fn reciprocal<const FUSED: bool>(d: f32) -> f32 {
    let mut r = f32::from_bits(0x7EF3_11C3_u32.wrapping_sub(d.to_bits()));
    for _ in 0..3 {
        r *= madd::<FUSED>(-d, r, 2.0);
    }
    r
}

/// `e^x` without a libm call, so loops over it vectorize: 2^n by the exponent bits times a
/// degree-6 polynomial for the remainder (relative error ~2e-7). Inputs are clamped to [-87, 88],
/// the range of normal f32 results.
#[inline(always)]
fn fast_exp<const FUSED: bool>(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // n = round(x / ln 2), read from the float's mantissa bits (see `MAGIC`): a float-to-int `as`
    // cast saturates, which the compiler cannot vectorize.
    let shifted = x * std::f32::consts::LOG2_E + MAGIC;
    let n = shifted - MAGIC;
    // ln 2 split in two so `x - n·ln2` stays exact.
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = [0.008_333_334, 0.041_666_668, 0.166_666_67, 0.5, 1.0, 1.0]
        .iter()
        .fold(0.001_388_889, |acc, c| madd::<FUSED>(acc, r, *c));
    // The low bits of `shifted` hold n in two's complement; 127 + n is 2^n's exponent field.
    let exponent = shifted.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127);
    p * f32::from_bits(exponent << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_and_gelu_match_the_library_functions() {
        check_exp_and_gelu::<false>();
        check_exp_and_gelu::<true>();
    }

    fn check_exp_and_gelu<const FUSED: bool>() {
        let exp = fast_exp::<FUSED>;
        for i in -800..=800 {
            let x = i as f32 / 10.0;
            let want = x.exp();
            if want > 1e-37 {
                assert!((exp(x) - want).abs() <= want * 1e-6, "exp({x}) = {} want {want} ({FUSED})", exp(x));
            }
        }
        // Clamped: far below the range it stays a tiny positive normal number, never NaN or negative.
        assert!(exp(-200.0) > 0.0 && exp(-200.0) < 1e-37 && exp(-200.0).is_normal());
        // Reference values of x·Φ(x).
        for (x, want) in
            [(-3.0, -0.004_049_696), (-1.0, -0.158_655_25), (0.0, 0.0), (0.5, 0.345_731_14), (2.0, 1.954_5)]
        {
            let got = gelu::<FUSED>(x);
            assert!((got - want).abs() < 1e-4, "gelu({x}) = {got} want {want} ({FUSED})");
        }
    }

    #[test]
    fn reciprocal_matches_division() {
        for i in 0..20_000 {
            let d = 1.0 + i as f32 * 0.37;
            for r in [reciprocal::<false>(d), reciprocal::<true>(d)] {
                assert!((r * d - 1.0).abs() < 5e-7, "1/{d} = {r}");
            }
        }
    }

    #[test]
    fn lane_reductions_cover_the_tail() {
        let v: Vec<f32> = (1..=21).map(|i| i as f32).collect();
        assert_eq!(sum(&v), 231.0);
        assert_eq!(sum_of_squares(&v, 1.0), (0..=20).map(|i| (i * i) as f32).sum::<f32>());
        assert_eq!(maximum(&v), 21.0);
        let mut e: Vec<f32> = (0..37).map(|i| i as f32 / 10.0).collect();
        let total = exp_and_sum::<true>(&mut e, 3.6);
        let want: Vec<f32> = (0..37).map(|i| (i as f32 / 10.0 - 3.6).exp()).collect();
        e.iter().zip(&want).for_each(|(got, want)| assert!((got - want).abs() < 1e-6 * want.max(1.0)));
        assert!((total - want.iter().sum::<f32>()).abs() < 1e-5, "{total}");
    }
}
