//! int8 matrix products for the embedding encoder: weights quantized per output row when the model
//! loads, activations per token on every call, products accumulated exactly in i32.
//!
//! Why not f32 (candle): a 12-layer encoder is ~21 M multiply-adds per token; in f32 that is
//! ~45 ms for a 32-token prompt on one core here, most of it spent re-packing the weight matrices on
//! every call. AVX-512 VNNI does 64 u8×i8 multiply-adds per instruction on weights packed once, in
//! the layout the instruction reads. The same packed weights feed the AMX tile unit (Sapphire
//! Rapids and later: 16 tokens × 16 outputs × 64 inputs per instruction), an AVX2 kernel and a
//! portable loop, and all give bit-identical i32 sums (integer arithmetic), so results do not
//! depend on the CPU.

/// Outputs per packed group: four 512-bit registers of 16 i32 sums.
const GROUP: usize = 64;
/// Inputs per step: VNNI multiplies groups of 4 adjacent u8×i8 pairs into one i32 lane.
const STEP: usize = 4;
/// Weights are quantized to ±63 (7 bits), not ±127: then two u8 × i8 products never overflow
/// i16 (2 × 255 × 63 < 32,767), so the AVX2 kernel's `vpmaddubsw` (which saturates) gives the same
/// exact sums as VNNI and AMX. Measured cost: int8 vs f32 cosine 0.9987–0.9993 → 0.9985–0.9992; the
/// held-out routing accuracy did not drop.
const WEIGHT_PEAK: f32 = 63.0;
/// Tokens per AMX tile.
const TILE_ROWS: usize = 16;
/// Zero point of the unsigned activations: `x ≈ scale × (q - 128)` (see `to_unsigned`).
const ZERO: i32 = 128;

/// A buffer whose first element sits on a 64-byte boundary, so no row of an AMX tile load or store
/// straddles two cache lines (unaligned activations made the products ~17 % slower).
#[derive(Default)]
pub struct Aligned<T> {
    raw: Vec<T>,
    start: usize,
    len: usize,
}

impl<T: Copy + Default> Aligned<T> {
    /// Sets the length to `len`; the contents are unspecified afterwards (every caller overwrites them).
    pub fn resize(&mut self, len: usize) {
        let slack = 64 / std::mem::size_of::<T>().max(1);
        self.raw.resize(len + slack, T::default());
        // Never more than `slack` for an element size dividing 64; capped in case it could not align.
        self.start = self.raw.as_ptr().align_offset(64).min(slack);
        self.len = len;
    }

    pub fn as_slice(&self) -> &[T] {
        &self.raw[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// `y = x Wᵀ + b` with `W` (`outputs × inputs`) held as int8.
pub struct QuantLinear {
    inputs: usize,
    outputs: usize,
    /// `[outputs / 64][inputs / 4][64][4]` i8 (stored as u8): one 256-byte step feeds 64 outputs.
    packed: Aligned<u8>,
    /// Per output row: the float value of one int8 unit.
    scale: Vec<f32>,
    /// Per output row: `128 × Σ w`, what the activations' zero point adds to each sum.
    zero_sum: Vec<i32>,
    bias: Vec<f32>,
    /// The original weights, for the exact reference the tests compare against.
    #[cfg(test)]
    pub(crate) exact: Vec<f32>,
}

/// Rows of activations quantized to u8, one scale per row (token). The values are padded to a
/// whole number of AMX tiles (16 rows) so the tile loads never read past the buffer; the padding
/// rows' sums are computed and dropped.
#[derive(Default)]
pub struct QuantRows {
    values: Aligned<u8>,
    scale: Vec<f32>,
    width: usize,
}

impl QuantRows {
    /// Quantizes `rows` (`n × width`, row-major), reusing this buffer.
    #[inline(always)]
    pub fn quantize(&mut self, rows: &[f32], width: usize) {
        self.width = width;
        self.values.resize((rows.len() / width.max(1)).next_multiple_of(TILE_ROWS) * width);
        self.scale.clear();
        for (row, out) in rows.chunks_exact(width).zip(self.values.as_mut_slice().chunks_exact_mut(width)) {
            let peak = peak_magnitude(row);
            let scale = if peak > 0.0 { peak / 127.0 } else { 1.0 };
            let inverse = 1.0 / scale;
            self.scale.push(scale);
            out.iter_mut().zip(row).for_each(|(q, x)| *q = to_unsigned(x * inverse));
        }
    }

    fn rows(&self) -> usize {
        self.scale.len()
    }
}

/// The largest `|x|`, in sixteen lanes so it vectorizes. A plain comparison, not `f32::max`,
/// whose NaN rule costs a compare and a blend per vector (this was ~15 % of start-up's embedding).
#[inline(always)]
fn peak_magnitude(values: &[f32]) -> f32 {
    let larger = |m: f32, v: f32| if v > m { v } else { m };
    let (chunks, rest) = values.as_chunks::<16>();
    let mut lanes = [0f32; 16];
    for chunk in chunks {
        lanes.iter_mut().zip(chunk).for_each(|(l, v)| *l = larger(*l, v.abs()));
    }
    rest.iter().map(|v| v.abs()).chain(lanes).fold(0f32, larger)
}

/// 1.5 × 2^23: for `|v| < 2^22`, `v + MAGIC` rounds `v` to the nearest integer (ties to even) and
/// leaves that integer, in two's complement, in the low mantissa bits. Reading it from the bits
/// replaces a float-to-int `as` cast, which saturates and so stays scalar.
pub(super) const MAGIC: f32 = 12_582_912.0;

/// `round(v) + 128` as a byte for `|v| ≤ 127`: the low byte of `v + MAGIC` is `round(v)` mod 256,
/// and adding 128 mod 256 flips its top bit.
#[inline(always)]
fn to_unsigned(v: f32) -> u8 {
    ((v + MAGIC).to_bits() as u8) ^ 0x80
}

impl QuantLinear {
    /// `weights` is `outputs × inputs`, row-major; `inputs` must be a multiple of 4 and `outputs`
    /// of 64 (true of every BERT-small shape).
    pub fn new(weights: &[f32], bias: Vec<f32>, outputs: usize, inputs: usize) -> Result<Self, String> {
        if !inputs.is_multiple_of(STEP)
            || !outputs.is_multiple_of(GROUP)
            || weights.len() != outputs * inputs
            || bias.len() != outputs
        {
            return Err(format!("cannot pack a {outputs}×{inputs} matrix for int8 products"));
        }
        let mut quantized = vec![0i8; weights.len()];
        let mut scale = Vec::with_capacity(outputs);
        let mut zero_sum = Vec::with_capacity(outputs);
        for (row, out) in weights.chunks_exact(inputs).zip(quantized.chunks_exact_mut(inputs)) {
            let peak = row.iter().fold(0f32, |m, w| m.max(w.abs()));
            let s = if peak > 0.0 { peak / WEIGHT_PEAK } else { 1.0 };
            for (w, q) in row.iter().zip(out.iter_mut()) {
                *q = (w / s).round().clamp(-WEIGHT_PEAK, WEIGHT_PEAK) as i8;
            }
            scale.push(s);
            zero_sum.push(ZERO * out.iter().map(|&q| i32::from(q)).sum::<i32>());
        }
        let mut packed = Aligned::default();
        packed.resize(weights.len());
        let order = quantized.chunks_exact(GROUP * inputs).flat_map(|group| {
            (0..inputs / STEP)
                .flat_map(move |step| group.chunks_exact(inputs).flat_map(move |row| &row[step * STEP..][..STEP]))
        });
        packed.as_mut_slice().iter_mut().zip(order).for_each(|(p, &q)| *p = q as u8);
        Ok(Self {
            inputs,
            outputs,
            packed,
            scale,
            zero_sum,
            bias,
            #[cfg(test)]
            exact: weights.to_vec(),
        })
    }

    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// `out` (resized to `rows × outputs`) = `x Wᵀ + b`.
    #[inline(always)]
    pub fn forward(&self, x: &QuantRows, sums: &mut Aligned<i32>, out: &mut Vec<f32>) {
        self.forward_with(kernel(), x, sums, out);
    }

    #[inline(always)]
    fn forward_with(&self, kernel: Kernel, x: &QuantRows, sums: &mut Aligned<i32>, out: &mut Vec<f32>) {
        debug_assert_eq!(x.width, self.inputs);
        let rows = x.rows();
        // Every element is written below: resizing without clearing avoids re-zeroing them.
        out.resize(rows * self.outputs, 0.0);
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        if kernel == Kernel::Amx && self.inputs.is_multiple_of(amx::DEPTH) {
            let mut sink = Dequantize { linear: self, x_scale: &x.scale, out };
            // SAFETY: `kernel()` chose AMX only after the CPU check and Linux granted the tile
            // state; `x.values` is padded to whole tiles of 16 rows (`QuantRows::quantize`).
            #[allow(unsafe_code)]
            unsafe {
                amx::product(x.values.as_slice(), rows, self.inputs, self.packed.as_slice(), self.outputs, &mut sink)
            };
            return;
        }
        sums.resize(rows * self.outputs);
        let sums = sums.as_mut_slice();
        product_with(kernel, x.values.as_slice(), rows, self.inputs, self.packed.as_slice(), self.outputs, sums);
        for ((row_sums, row_out), x_scale) in
            sums.chunks_exact(self.outputs).zip(out.chunks_exact_mut(self.outputs)).zip(&x.scale)
        {
            let parts = row_sums.iter().zip(&self.zero_sum).zip(&self.scale).zip(&self.bias);
            for (y, (((sum, zero), w_scale), b)) in row_out.iter_mut().zip(parts) {
                *y = dequantize(*sum, *zero, *x_scale, *w_scale, *b);
            }
        }
    }

    /// The same product in f32 on the original weights, for tests.
    #[cfg(test)]
    pub fn forward_exact(&self, x: &[f32], out: &mut Vec<f32>) {
        out.clear();
        for row in x.chunks_exact(self.inputs) {
            for (w, b) in self.exact.chunks_exact(self.inputs).zip(&self.bias) {
                out.push(row.iter().zip(w).map(|(a, b)| a * b).sum::<f32>() + b);
            }
        }
    }
}

/// One output from its exact integer sum: every kernel path uses this expression, so all give the
/// same floats.
#[inline(always)]
fn dequantize(sum: i32, zero: i32, x_scale: f32, w_scale: f32, bias: f32) -> f32 {
    (sum - zero) as f32 * (x_scale * w_scale) + bias
}

/// Where a kernel that computes 16 × 16 blocks of sums (AMX) puts them.
trait TileSink {
    /// Sums for tokens `row..row + valid` (at most 16) × outputs `column..column + 16`.
    fn tile(&mut self, row: usize, column: usize, valid: usize, sums: &[[i32; 16]; 16]);
}

/// Turns each block of sums into outputs while it is in L1: the `rows × outputs` i32 sums are never
/// written out and read back. In a 64-token pass the products took ~1 ms longer than in a loop of
/// products alone, and those stored sums were the suspected cause; the e5 bench got 5–12 % faster
/// with this sink and the 2 × 2 blocks, but the router's eval did not (BENCHMARKS.md, session 5).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
struct Dequantize<'a> {
    linear: &'a QuantLinear,
    x_scale: &'a [f32],
    out: &'a mut [f32],
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
impl TileSink for Dequantize<'_> {
    #[inline(always)]
    fn tile(&mut self, row: usize, column: usize, valid: usize, sums: &[[i32; 16]; 16]) {
        let outputs = self.linear.outputs;
        // Fixed-size arrays, so the rows below compile to whole-register operations.
        let columns = |v: &'_ [f32]| -> [f32; 16] { std::array::from_fn(|i| v[column + i]) };
        let (w_scale, bias) = (columns(&self.linear.scale), columns(&self.linear.bias));
        let zero: [i32; 16] = std::array::from_fn(|i| self.linear.zero_sum[column + i]);
        for (t, row_sums) in sums.iter().enumerate().take(valid) {
            let x_scale = self.x_scale[row + t];
            let row_out: [f32; 16] =
                std::array::from_fn(|i| dequantize(row_sums[i], zero[i], x_scale, w_scale[i], bias[i]));
            self.out[(row + t) * outputs + column..][..16].copy_from_slice(&row_out);
        }
    }
}

/// Raw sums into a `rows × outputs` slice (the kernel tests compare them exactly).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
struct RawSums<'a> {
    outputs: usize,
    sums: &'a mut [i32],
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
impl TileSink for RawSums<'_> {
    #[inline(always)]
    fn tile(&mut self, row: usize, column: usize, valid: usize, sums: &[[i32; 16]; 16]) {
        for (t, row_sums) in sums.iter().enumerate().take(valid) {
            self.sums[(row + t) * self.outputs + column..][..16].copy_from_slice(row_sums);
        }
    }
}

/// Which product kernel this CPU runs, decided once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kernel {
    /// AMX tiles (`tdpbusd`) for products whose inputs are a multiple of 64, AVX-512 VNNI for the
    /// rest and for everything else in the pass.
    Amx,
    /// AVX-512 VNNI: `vpdpbusd` on 64 outputs × up to 6 tokens at a time.
    Vnni512,
    /// AVX2 (and FMA, which the encoder's pass enables with it): `vpmaddubsw` + `vpmaddwd`, exact
    /// because weights stay within ±63.
    Avx2,
    /// The portable loop for the baseline target.
    Portable,
}

/// Names for `LLM_GATEWAY_EMBED_KERNEL`, which can cap the kernel below what the CPU offers (to
/// compare them, or to rule one out); it never selects one the CPU lacks.
const KERNEL_NAMES: [(&str, Kernel); 4] =
    [("amx", Kernel::Amx), ("avx512", Kernel::Vnni512), ("avx2", Kernel::Avx2), ("portable", Kernel::Portable)];

pub fn kernel() -> Kernel {
    static KERNEL: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
    *KERNEL.get_or_init(|| {
        let detected = detect_kernel();
        let Ok(cap) = std::env::var("LLM_GATEWAY_EMBED_KERNEL") else {
            return detected;
        };
        match KERNEL_NAMES.iter().find(|(name, _)| *name == cap.trim()) {
            // The enum lists kernels from the most to the least capable.
            Some(&(_, wanted)) => wanted.max(detected),
            None => {
                let names: Vec<&str> = KERNEL_NAMES.iter().map(|(name, _)| *name).collect();
                tracing::warn!(
                    value = %cap,
                    "LLM_GATEWAY_EMBED_KERNEL must be one of {}; ignored",
                    names.join(", ")
                );
                detected
            }
        }
    })
}

fn detect_kernel() -> Kernel {
    // Every feature the matching target-feature functions enable (here and in `encoder.rs`).
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let avx2 = has!("avx2") && has!("fma");
        if avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vnni") {
            #[cfg(target_os = "linux")]
            if amx::enable() {
                return Kernel::Amx;
            }
            return Kernel::Vnni512;
        }
        if avx2 {
            return Kernel::Avx2;
        }
    }
    Kernel::Portable
}

/// `sums[t][o] = Σ_i x[t][i] · w[o][i]` (u8 × i8, exact) for `x` (`rows × inputs`, padded to a
/// multiple of 16 rows) and packed `w`, with `kernel` (or the next one down where it does not apply).
fn product_with(kernel: Kernel, x: &[u8], rows: usize, inputs: usize, w: &[u8], outputs: usize, sums: &mut [i32]) {
    assert!(x.len() >= rows * inputs && w.len() == inputs * outputs && sums.len() == rows * outputs);
    let padded = x.len() >= rows.next_multiple_of(TILE_ROWS) * inputs;
    let (padded_x, x) = (x, &x[..rows * inputs]);
    match kernel {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        // SAFETY: `kernel()` chose AMX only after the CPU check and Linux granted the tile state;
        // the tile loads read 16 rows, which the padding (checked here) provides.
        #[allow(unsafe_code)]
        Kernel::Amx if padded && inputs.is_multiple_of(amx::DEPTH) => unsafe {
            amx::product(padded_x, rows, inputs, w, outputs, &mut RawSums { outputs, sums })
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `kernel()` chose these only after detecting the CPU features the functions enable.
        #[allow(unsafe_code)]
        Kernel::Vnni512 | Kernel::Amx => unsafe { vnni::product(x, rows, inputs, w, outputs, sums) },
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        Kernel::Avx2 => unsafe { avx2::product(x, rows, inputs, w, outputs, sums) },
        _ => portable(x, rows, inputs, w, outputs, sums),
    }
}

#[inline(always)]
fn portable(x: &[u8], rows: usize, inputs: usize, w: &[u8], outputs: usize, sums: &mut [i32]) {
    for (group, weights) in w.chunks_exact(GROUP * inputs).enumerate() {
        let (steps, _) = weights.as_chunks::<{ GROUP * STEP }>();
        for row in 0..rows {
            let (xs, _) = x[row * inputs..][..inputs].as_chunks::<STEP>();
            let mut acc = [0i32; GROUP];
            for (xq, step) in xs.iter().zip(steps) {
                let xq = xq.map(i32::from);
                for (a, wq) in acc.iter_mut().zip(step.as_chunks::<STEP>().0) {
                    *a += (0..STEP).map(|j| xq[j] * i32::from(wq[j] as i8)).sum::<i32>();
                }
            }
            sums[row * outputs + group * GROUP..][..GROUP].copy_from_slice(&acc);
        }
    }
}

/// AVX2 without VNNI (AMD Zen 2/3, Intel before Ice Lake): `vpmaddubsw` multiplies u8 × i8 and
/// adds pairs into i16 (saturating, which 7-bit weights rule out), `vpmaddwd` by 1 adds those pairs
/// into i32: together one VNNI `vpdpbusd` on 8 lanes, the same packed weights and the same sums.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi32, _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_set1_epi16, _mm256_set1_epi32,
        _mm256_setzero_si256,
    };

    use super::{GROUP, STEP};

    /// Outputs per pass over the weights: four registers of 8 sums (half a packed group).
    const HALF: usize = GROUP / 2;
    /// Tokens per register tile: 2 tokens × 4 sums, 4 weight registers, a broadcast and the ones
    /// fit the 16 registers.
    const TILE: usize = 2;

    #[target_feature(enable = "avx2")]
    pub(super) fn product(x: &[u8], rows: usize, inputs: usize, w: &[u8], outputs: usize, sums: &mut [i32]) {
        for (group, weights) in w.chunks_exact(GROUP * inputs).enumerate() {
            for half in 0..2 {
                let mut row = 0;
                while row < rows {
                    let tile = (rows - row).min(TILE);
                    let x = &x[row * inputs..(row + tile) * inputs];
                    let sums = &mut sums[row * outputs + group * GROUP + half * HALF..];
                    if tile == 2 {
                        product_tile::<2>(x, inputs, weights, half, outputs, sums);
                    } else {
                        product_tile::<1>(x, inputs, weights, half, outputs, sums);
                    }
                    row += tile;
                }
            }
        }
    }

    /// Sums for `ROWS` tokens × outputs `32·half..32·half + 32` of one group; `sums` starts at the
    /// tile's first output.
    #[target_feature(enable = "avx2")]
    fn product_tile<const ROWS: usize>(
        x: &[u8],
        inputs: usize,
        weights: &[u8],
        half: usize,
        outputs: usize,
        sums: &mut [i32],
    ) {
        let xs: [&[[u8; STEP]]; ROWS] = std::array::from_fn(|t| x[t * inputs..][..inputs].as_chunks::<STEP>().0);
        let (steps, _) = weights.as_chunks::<{ GROUP * STEP }>();
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_si256(); 4]; ROWS];
        for (i, step) in steps.iter().enumerate() {
            let (parts, _) = step[half * HALF * STEP..][..HALF * STEP].as_chunks::<32>();
            let w: [__m256i; 4] = std::array::from_fn(|j| bytemuck::cast(parts[j]));
            for t in 0..ROWS {
                let xq = _mm256_set1_epi32(i32::from_le_bytes(xs[t][i]));
                for j in 0..4 {
                    let pairs = _mm256_maddubs_epi16(xq, w[j]);
                    acc[t][j] = _mm256_add_epi32(acc[t][j], _mm256_madd_epi16(pairs, ones));
                }
            }
        }
        for (t, registers) in acc.iter().enumerate() {
            let out = &mut sums[t * outputs..][..HALF];
            for (chunk, register) in out.as_chunks_mut::<8>().0.iter_mut().zip(registers) {
                *chunk = bytemuck::cast::<__m256i, [i32; 8]>(*register);
            }
        }
    }
}

/// The AMX tile unit through inline assembly (the intrinsics are not stable Rust yet). Tile
/// registers are invisible to the compiler, so they keep their values between `asm!` blocks; the
/// functions below configure, use and release them without calling anything in between.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[allow(unsafe_code)]
mod amx {
    use std::arch::asm;

    use super::{GROUP, STEP, TILE_ROWS, TileSink};

    /// Inputs per tile multiply: a tile row holds 64 bytes.
    pub(super) const DEPTH: usize = 64;
    /// Bytes between consecutive input steps in the packed weights (64 outputs × 4 inputs).
    const WEIGHT_STRIDE: usize = GROUP * STEP;
    /// Outputs per tile: a tile row of 16 i32 sums.
    const COLUMNS: usize = 16;

    /// Whether the CPU has AMX-INT8 and Linux lets this process use the tile state (it must be
    /// requested once per process; without it the first tile instruction faults).
    pub(super) fn enable() -> bool {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let (tile, int8) = (leaf7.edx >> 24 & 1 == 1, leaf7.edx >> 25 & 1 == 1);
        // SAFETY: arch_prctl with this request only changes the process's permitted xsave
        // features; it reads and writes no memory of ours.
        tile && int8 && unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) } == 0
    }

    /// Clears the accumulator tiles 0–3 (tile instructions touch no memory or registers of Rust's).
    ///
    /// # Safety
    /// As for `product`, and the tiles are configured (`ldtilecfg`).
    #[inline(always)]
    unsafe fn zero_accumulators() {
        // SAFETY: see the function's contract.
        unsafe { asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem)) };
    }

    /// Palette 1, all eight tiles 16 rows × 64 bytes.
    fn config() -> [u8; 64] {
        let mut config = [0u8; 64];
        config[0] = 1;
        for tile in 0..8 {
            config[16 + 2 * tile] = 64;
            config[48 + tile] = TILE_ROWS as u8;
        }
        config
    }

    /// Blocks of 16 tokens × 16 outputs accumulate in tiles 0–3, tiles 4–7 hold tokens (16 × 64
    /// inputs) and weights (64 inputs × 16 outputs); each finished block goes to `sink`.
    ///
    /// # Safety
    /// The CPU has AMX-INT8 and `enable()` succeeded; `x` holds `rows` rounded up to 16 rows of
    /// `inputs` bytes; `inputs` is a multiple of 64; `w` is `QuantLinear::packed` for `inputs` ×
    /// `outputs`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn product(
        x: &[u8],
        rows: usize,
        inputs: usize,
        w: &[u8],
        outputs: usize,
        sink: &mut impl TileSink,
    ) {
        assert!(
            x.len() >= rows.next_multiple_of(TILE_ROWS) * inputs
                && inputs.is_multiple_of(DEPTH)
                && w.len() == inputs * outputs
        );
        let config = config();
        // Finished blocks are stored here (in L1) for the sink. On a 64-byte line: a stack array of
        // i32 is only 4-aligned, and then every tile row stored and read back is split in two.
        #[repr(align(64))]
        struct Spill([[i32; COLUMNS]; TILE_ROWS]);
        let mut spill = Spill([[0i32; COLUMNS]; TILE_ROWS]);
        macro_rules! store {
            ($tmm:literal, $row:expr, $col:expr) => {{
                let (row, col) = ($row, $col);
                let out = spill.0.as_mut_ptr().cast::<i32>();
                // SAFETY: 16 rows of 64 bytes, 64 bytes apart: exactly `spill`.
                unsafe {
                    asm!(concat!("tilestored [{o} + {s} * 1], tmm", $tmm),
                        o = in(reg) out, s = in(reg) COLUMNS * 4, options(nostack))
                };
                sink.tile(row, col, (rows - row).min(TILE_ROWS), &spill.0);
            }};
        }
        // SAFETY (the loads below): every tile load reads 16 rows of 64 bytes at the given stride
        // inside `x` or `w` (bounds asserted above: rows are padded, inputs are whole steps). The
        // sink's code between the blocks uses no tile registers.
        unsafe { asm!("ldtilecfg [{}]", in(reg) config.as_ptr(), options(nostack, readonly)) };
        let row_tiles = rows.div_ceil(TILE_ROWS);
        for (group, weights) in w.chunks_exact(GROUP * inputs).enumerate() {
            let mut tile = 0;
            while tile < row_tiles {
                let first = tile * TILE_ROWS;
                let tokens = x[first * inputs..].as_ptr();
                if tile + 1 < row_tiles {
                    // Two tiles of tokens × two of outputs: each tile loaded feeds two multiplies,
                    // and the second pair's loads overlap the first pair's multiplies.
                    let next_tokens = x[(first + TILE_ROWS) * inputs..].as_ptr();
                    for half in 0..2 {
                        unsafe { zero_accumulators() };
                        for depth in 0..inputs / DEPTH {
                            let b = weights[depth * DEPTH * GROUP + half * 2 * COLUMNS * STEP..].as_ptr();
                            unsafe {
                                asm!(
                                    "tileloadd tmm4, [{a0} + {a_stride} * 1]",
                                    "tileloadd tmm6, [{b} + {b_stride} * 1]",
                                    "tdpbusd tmm0, tmm4, tmm6",
                                    "tileloadd tmm5, [{a1} + {a_stride} * 1]",
                                    "tdpbusd tmm2, tmm5, tmm6",
                                    "tileloadd tmm7, [{b} + {b_stride} * 1 + 64]",
                                    "tdpbusd tmm1, tmm4, tmm7",
                                    "tdpbusd tmm3, tmm5, tmm7",
                                    a0 = in(reg) tokens.wrapping_add(depth * DEPTH),
                                    a1 = in(reg) next_tokens.wrapping_add(depth * DEPTH),
                                    a_stride = in(reg) inputs,
                                    b = in(reg) b,
                                    b_stride = in(reg) WEIGHT_STRIDE,
                                    options(nostack, readonly),
                                );
                            }
                        }
                        let col = group * GROUP + half * 2 * COLUMNS;
                        store!("0", first, col);
                        store!("1", first, col + COLUMNS);
                        store!("2", first + TILE_ROWS, col);
                        store!("3", first + TILE_ROWS, col + COLUMNS);
                    }
                    tile += 2;
                } else {
                    // A last, odd tile of tokens: one load of tokens feeds four multiplies.
                    unsafe { zero_accumulators() };
                    for depth in 0..inputs / DEPTH {
                        let b = weights[depth * DEPTH * GROUP..].as_ptr();
                        unsafe {
                            asm!(
                                "tileloadd tmm4, [{a} + {a_stride} * 1]",
                                "tileloadd tmm5, [{b} + {b_stride} * 1]",
                                "tdpbusd tmm0, tmm4, tmm5",
                                "tileloadd tmm6, [{b} + {b_stride} * 1 + 64]",
                                "tdpbusd tmm1, tmm4, tmm6",
                                "tileloadd tmm7, [{b} + {b_stride} * 1 + 128]",
                                "tdpbusd tmm2, tmm4, tmm7",
                                "tileloadd tmm5, [{b} + {b_stride} * 1 + 192]",
                                "tdpbusd tmm3, tmm4, tmm5",
                                a = in(reg) tokens.wrapping_add(depth * DEPTH),
                                a_stride = in(reg) inputs,
                                b = in(reg) b,
                                b_stride = in(reg) WEIGHT_STRIDE,
                                options(nostack, readonly),
                            );
                        }
                    }
                    let col = group * GROUP;
                    store!("0", first, col);
                    store!("1", first, col + COLUMNS);
                    store!("2", first, col + 2 * COLUMNS);
                    store!("3", first, col + 3 * COLUMNS);
                    tile += 1;
                }
            }
        }
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::{__m512i, _mm512_dpbusd_epi32, _mm512_set1_epi32, _mm512_setzero_si512};

    use super::{GROUP, STEP};

    /// Registers of 16 sums per group of outputs.
    const LANES: usize = GROUP / 16;
    /// Tokens per register tile: 6 tokens × 4 registers of sums, the 4 weight registers and a
    /// broadcast fit the 32 registers; a step then loads 4 + 6 values for 24 multiply-adds (with
    /// 2 × 8 it was 10 for 16, and the products ran at ~180 instead of ~290 G multiply-adds/s).
    const TILE: usize = 6;

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn product(x: &[u8], rows: usize, inputs: usize, w: &[u8], outputs: usize, sums: &mut [i32]) {
        for (group, weights) in w.chunks_exact(GROUP * inputs).enumerate() {
            let mut row = 0;
            while row < rows {
                let tile = (rows - row).min(TILE);
                let x = &x[row * inputs..(row + tile) * inputs];
                let sums = &mut sums[row * outputs + group * GROUP..];
                match tile {
                    6 => product_tile::<6>(x, inputs, weights, outputs, sums),
                    5 => product_tile::<5>(x, inputs, weights, outputs, sums),
                    4 => product_tile::<4>(x, inputs, weights, outputs, sums),
                    3 => product_tile::<3>(x, inputs, weights, outputs, sums),
                    2 => product_tile::<2>(x, inputs, weights, outputs, sums),
                    _ => product_tile::<1>(x, inputs, weights, outputs, sums),
                }
                row += tile;
            }
        }
    }

    /// Sums for `ROWS` tokens × one group of outputs; `sums` starts at the tile's first output.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn product_tile<const ROWS: usize>(x: &[u8], inputs: usize, weights: &[u8], outputs: usize, sums: &mut [i32]) {
        let xs: [&[[u8; STEP]]; ROWS] = std::array::from_fn(|t| x[t * inputs..][..inputs].as_chunks::<STEP>().0);
        let (steps, _) = weights.as_chunks::<{ GROUP * STEP }>();
        let mut acc = [[_mm512_setzero_si512(); LANES]; ROWS];
        for (i, step) in steps.iter().enumerate() {
            let (parts, _) = step.as_chunks::<64>();
            let w: [__m512i; LANES] = std::array::from_fn(|j| bytemuck::cast(parts[j]));
            for t in 0..ROWS {
                let xq = _mm512_set1_epi32(i32::from_le_bytes(xs[t][i]));
                for j in 0..LANES {
                    acc[t][j] = _mm512_dpbusd_epi32(acc[t][j], xq, w[j]);
                }
            }
        }
        for (t, registers) in acc.iter().enumerate() {
            let out = &mut sums[t * outputs..][..GROUP];
            for (chunk, register) in out.as_chunks_mut::<16>().0.iter_mut().zip(registers) {
                *chunk = bytemuck::cast::<__m512i, [i32; 16]>(*register);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(seed: &mut u64) -> u32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*seed >> 33) as u32
    }

    #[test]
    fn every_kernel_gives_the_exact_integer_sums() {
        let mut seed = 7;
        let shapes = [(1, 8, 64), (3, 384, 64), (7, 36, 192), (13, 384, 128), (17, 1536, 64), (40, 128, 192)];
        for (rows, inputs, outputs) in shapes {
            let mut x: Vec<u8> = (0..rows * inputs).map(|_| random(&mut seed) as u8).collect();
            let w: Vec<f32> = (0..outputs * inputs).map(|_| (random(&mut seed) % 127) as f32 - 63.0).collect();
            // Integer weights with peak 63 quantize to themselves (scale 1).
            let mut w = w;
            for row in w.chunks_exact_mut(inputs) {
                row[0] = WEIGHT_PEAK;
            }
            let linear = QuantLinear::new(&w, vec![0.0; outputs], outputs, inputs).unwrap();
            let mut expected = vec![0i32; rows * outputs];
            for t in 0..rows {
                for o in 0..outputs {
                    expected[t * outputs + o] =
                        (0..inputs).map(|i| i32::from(x[t * inputs + i]) * w[o * inputs + i] as i32).sum();
                }
            }
            // Padding rows (as `QuantRows` keeps them) hold bytes whose sums must not leak out.
            x.resize(rows.next_multiple_of(TILE_ROWS) * inputs, 0xA5);
            for candidate in [Kernel::Portable, Kernel::Avx2, Kernel::Vnni512, Kernel::Amx] {
                if candidate < kernel() {
                    continue; // this CPU lacks it
                }
                let mut sums = vec![0; rows * outputs];
                product_with(candidate, &x, rows, inputs, linear.packed.as_slice(), outputs, &mut sums);
                assert_eq!(sums, expected, "{candidate:?} {rows}×{inputs}×{outputs}");
            }
        }
    }

    #[test]
    fn every_kernel_gives_the_same_outputs() {
        // The AMX path turns sums into outputs block by block (`Dequantize`); the others after the
        // whole product. Same sums, same expression: the floats must be identical, including the
        // rows of a last, partial tile and an odd tile after pairs.
        let mut seed = 5;
        for (rows, inputs, outputs) in [(1, 64, 64), (5, 384, 128), (17, 128, 192), (40, 384, 64), (64, 1536, 128)] {
            let w: Vec<f32> = (0..outputs * inputs).map(|_| (random(&mut seed) % 2001) as f32 / 1000.0 - 1.0).collect();
            let bias: Vec<f32> = (0..outputs).map(|o| o as f32 / 7.0).collect();
            let x: Vec<f32> = (0..rows * inputs).map(|_| (random(&mut seed) % 2001) as f32 / 100.0 - 10.0).collect();
            let linear = QuantLinear::new(&w, bias, outputs, inputs).unwrap();
            let mut q = QuantRows::default();
            q.quantize(&x, inputs);
            let (mut sums, mut want) = (Aligned::default(), Vec::new());
            linear.forward_with(Kernel::Portable, &q, &mut sums, &mut want);
            for candidate in [Kernel::Avx2, Kernel::Vnni512, Kernel::Amx] {
                if candidate < kernel() {
                    continue;
                }
                let mut got = Vec::new();
                linear.forward_with(candidate, &q, &mut sums, &mut got);
                assert_eq!(got, want, "{candidate:?} {rows}×{inputs}×{outputs}");
            }
        }
    }

    #[test]
    fn extreme_values_do_not_saturate_any_kernel() {
        // The largest activations against the largest weights of either sign: the AVX2 kernel's
        // 16-bit pair sums stay exact only because weights are quantized to ±63.
        let (rows, inputs, outputs): (usize, usize, usize) = (2, 64, 64);
        let mut w = vec![WEIGHT_PEAK; outputs * inputs];
        w[inputs..2 * inputs].fill(-WEIGHT_PEAK);
        let linear = QuantLinear::new(&w, vec![0.0; outputs], outputs, inputs).unwrap();
        let x = vec![255u8; rows.next_multiple_of(TILE_ROWS) * inputs];
        let peak = 255 * inputs as i32 * WEIGHT_PEAK as i32;
        for candidate in [Kernel::Portable, Kernel::Avx2, Kernel::Vnni512, Kernel::Amx] {
            if candidate < kernel() {
                continue;
            }
            let mut sums = vec![0; rows * outputs];
            product_with(candidate, &x, rows, inputs, linear.packed.as_slice(), outputs, &mut sums);
            assert_eq!(&sums[..2], &[peak, -peak], "{candidate:?}");
        }
    }

    #[test]
    fn activations_round_to_the_nearest_byte() {
        for i in -1270..=1270 {
            let v = i as f32 / 10.0;
            assert_eq!(to_unsigned(v), (v.round_ties_even() as i32 + ZERO) as u8, "{v}");
        }
    }

    #[test]
    fn the_quantized_product_tracks_the_float_one() {
        let mut seed = 11;
        let (rows, inputs, outputs) = (5, 384, 128);
        let w: Vec<f32> = (0..outputs * inputs).map(|_| (random(&mut seed) % 2001) as f32 / 1000.0 - 1.0).collect();
        let bias: Vec<f32> = (0..outputs).map(|o| o as f32 / 10.0).collect();
        let x: Vec<f32> = (0..rows * inputs).map(|_| (random(&mut seed) % 2001) as f32 / 100.0 - 10.0).collect();
        let linear = QuantLinear::new(&w, bias, outputs, inputs).unwrap();
        let mut q = QuantRows::default();
        q.quantize(&x, inputs);
        let (mut sums, mut got, mut want) = (Aligned::default(), Vec::new(), Vec::new());
        linear.forward(&q, &mut sums, &mut got);
        linear.forward_exact(&x, &mut want);
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).powi(2)).sum::<f32>().sqrt();
        let norm = want.iter().map(|b| b * b).sum::<f32>().sqrt();
        assert!(err / norm < 0.02, "relative error {}", err / norm);
        assert!(QuantLinear::new(&w, vec![0.0; outputs], outputs, inputs - 1).is_err());
    }
}
