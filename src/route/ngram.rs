//! The embedding tier's lexical half: a softmax classifier over the character n-grams of the
//! route examples, trained when the config loads, whose probabilities are blended with the
//! embedding classifier's (`Scorer::Linear`). A sentence vector blurs the words a request is made
//! of into its topic; n-grams keep them ("haiku", "TL;DR", "als JSON", "翻译", "HAVING") in any
//! script, and word stems survive typos and inflection. The two err on different prompts: on
//! the router's development sets the blend is right 2.5–5 points more often than either alone.
//!
//! Features are TF-IDF weighted counts of the 2- to 5-character n-grams inside each
//! space-padded, lower-cased word, hashed into [`BUCKETS`] buckets (no vocabulary to store), and
//! the row is scaled to unit length.

/// Hash buckets (2^18, 2 MB of per-bucket tables). examples/routing.yaml has ~250,000 distinct
/// n-grams, ~92,000 of them in two examples or more (the ones that get a weight row), so some
/// share a bucket; a vocabulary without collisions (scikit-learn) scored the same.
const BUCKETS: usize = 1 << 18;
const SHORTEST: usize = 2;
const LONGEST: usize = 5;
/// Mini-batch gradient descent without regularisation: the classifier is only ever blended with
/// the embedding one, whose probabilities temper it. 60 epochs of batches of 32 at rate 8 match a
/// fully converged solver on the development sets (30 epochs lose ~0.5 points).
const EPOCHS: usize = 60;
const BATCH: usize = 32;
const LEARNING_RATE: f32 = 8.0;

/// A text's features: (bucket or weight row, value) sorted by bucket.
type Features = Vec<(u32, f32)>;

/// A bucket without a weight row: seen in fewer than [`MIN_EXAMPLES`] examples.
const NO_ROW: u32 = u32::MAX;
/// N-grams of a single example are mostly that example's names and numbers: learning them costs
/// two thirds of the rows and their training time for nothing measurable on the development sets.
const MIN_EXAMPLES: u32 = 2;

pub struct CharNgrams {
    /// `[row][route]`: rows for the buckets seen in at least [`MIN_EXAMPLES`] examples only, so
    /// the table stays small enough for the CPU caches while training.
    weights: Vec<f32>,
    bias: Vec<f32>,
    /// Per bucket: its weight row or [`NO_ROW`].
    rows: Vec<u32>,
    /// Per bucket: inverse document frequency (smoothed). Buckets without a row still count in a
    /// text's length, so a prompt of mostly unfamiliar n-grams gets a milder opinion.
    idf: Vec<f32>,
    routes: usize,
}

impl CharNgrams {
    /// Trains on `(route, text)` pairs. Deterministic: zero start, a fixed shuffle. ~0.8 s for the
    /// 4,131 examples of examples/routing.yaml.
    pub fn train(examples: &[(usize, &str)], routes: usize) -> Self {
        let counts: Vec<Features> = examples.iter().map(|(_, text)| counts(text)).collect();
        let mut document_frequency = vec![0u32; BUCKETS];
        counts.iter().flatten().for_each(|(bucket, _)| document_frequency[*bucket as usize] += 1);
        let documents = examples.len() as f32;
        let idf = document_frequency.iter().map(|df| ((1.0 + documents) / (1.0 + *df as f32)).ln() + 1.0).collect();
        let mut kept = 0u32;
        let rows = document_frequency
            .iter()
            .map(|&df| {
                if df < MIN_EXAMPLES {
                    return NO_ROW;
                }
                kept += 1;
                kept - 1
            })
            .collect();
        let mut model = Self { weights: vec![0.0; kept as usize * routes], bias: vec![0.0; routes], rows, idf, routes };
        let features: Vec<Features> = counts.into_iter().map(|c| model.weigh(c)).collect();

        let mut order: Vec<usize> = (0..features.len()).collect();
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut gradients = vec![0f32; BATCH * routes];
        let mut probabilities = vec![0f32; routes];
        for _ in 0..EPOCHS {
            shuffle(&mut order, &mut rng);
            for batch in order.chunks(BATCH) {
                // Every gradient in a batch comes from the same weights, then all are applied.
                let step = LEARNING_RATE / batch.len() as f32;
                for (&example, gradient) in batch.iter().zip(gradients.chunks_exact_mut(routes)) {
                    model.probabilities_into(&features[example], &mut probabilities);
                    for (route, (g, p)) in gradient.iter_mut().zip(&probabilities).enumerate() {
                        *g = step * (p - f32::from(u8::from(examples[example].0 == route)));
                    }
                }
                for (&example, gradient) in batch.iter().zip(gradients.chunks_exact(routes)) {
                    for &(row, x) in &features[example] {
                        let weights = &mut model.weights[row as usize * routes..][..routes];
                        weights.iter_mut().zip(gradient).for_each(|(w, g)| *w -= g * x);
                    }
                    model.bias.iter_mut().zip(gradient).for_each(|(b, g)| *b -= g);
                }
            }
        }
        model
    }

    /// The probability of each route for `text`.
    pub fn probabilities(&self, text: &str) -> Vec<f32> {
        let mut out = vec![0f32; self.routes];
        self.probabilities_into(&self.weigh(counts(text)), &mut out);
        out
    }

    fn probabilities_into(&self, features: &[(u32, f32)], out: &mut [f32]) {
        out.copy_from_slice(&self.bias);
        for &(row, x) in features {
            let weights = &self.weights[row as usize * self.routes..][..self.routes];
            out.iter_mut().zip(weights).for_each(|(o, w)| *o += w * x);
        }
        let peak = out.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
        out.iter_mut().for_each(|o| *o = (*o - peak).exp());
        let total: f32 = out.iter().sum();
        out.iter_mut().for_each(|o| *o /= total);
    }

    /// Bucket counts to (row, TF-IDF) for the buckets with a row: sublinear term frequency times
    /// idf, divided by the length of the whole text's vector.
    fn weigh(&self, counts: Features) -> Features {
        let mut norm = 0f32;
        let mut features: Features = Vec::with_capacity(counts.len());
        for (bucket, count) in counts {
            let weight = (1.0 + count.ln()) * self.idf[bucket as usize];
            norm += weight * weight;
            let row = self.rows[bucket as usize];
            if row != NO_ROW {
                features.push((row, weight));
            }
        }
        let norm = norm.sqrt();
        if norm > 0.0 {
            features.iter_mut().for_each(|(_, w)| *w /= norm);
        }
        features
    }
}

/// How often each n-gram bucket occurs in `text`, sorted by bucket.
fn counts(text: &str) -> Features {
    let mut buckets: Vec<u32> = Vec::with_capacity(text.len() * (LONGEST - SHORTEST + 1));
    let mut word: Vec<char> = Vec::with_capacity(32);
    for token in text.split_whitespace() {
        word.clear();
        word.push(' ');
        word.extend(token.chars().flat_map(char::to_lowercase));
        word.push(' ');
        for n in SHORTEST..=LONGEST.min(word.len()) {
            buckets.extend(word.windows(n).map(bucket));
        }
    }
    buckets.sort_unstable();
    let mut out: Features = Vec::with_capacity(buckets.len());
    for b in buckets {
        match out.last_mut() {
            Some((last, count)) if *last == b => *count += 1.0,
            _ => out.push((b, 1.0)),
        }
    }
    out
}

/// FNV-1a over the characters' code points.
fn bucket(gram: &[char]) -> u32 {
    let hash = gram.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &c| (h ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3));
    (hash as usize % BUCKETS) as u32
}

/// Fisher–Yates with xorshift64: the same order on every machine.
fn shuffle(order: &mut [usize], state: &mut u64) {
    for i in (1..order.len()).rev() {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        order.swap(i, (*state % (i as u64 + 1)) as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_routes_from_the_words_of_their_examples_in_any_script() {
        let examples = [
            (0, "write a haiku about the sea"),
            (0, "a haiku about autumn leaves please"),
            (0, "俳句を書いて"),
            (1, "translate this sentence to German"),
            (1, "translate the menu into French"),
            (1, "请翻译成英文"),
            (1, "翻译这封邮件"),
        ];
        let model = CharNgrams::train(&examples, 2);
        let p = model.probabilities("Haiku about my cat?");
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(p[0] > 0.8, "{p:?}");
        assert!(model.probabilities("translating a letter to Spanish")[1] > 0.8);
        assert!(model.probabilities("把这句话翻译成日文")[1] > 0.6);
        // Nothing in common with either route, or only n-grams of a single example ("俳句を書いて"):
        // no strong opinion.
        for text in ["zzz", "俳句"] {
            let p = model.probabilities(text);
            assert!(p.iter().all(|p| *p < 0.8), "{text}: {p:?}");
        }
        // N-grams of a single example have no weight row: such a text is judged like an empty one.
        assert_eq!(model.probabilities("俳句"), model.probabilities(""));
    }

    #[test]
    fn counts_are_case_blind_and_merged_per_bucket() {
        assert_eq!(counts("Ab ab"), counts("ab AB"));
        let c = counts("ab ab");
        // " a", "ab", "b ", " ab", "ab ", " ab ": six n-grams, each twice.
        assert_eq!(c.len(), 6);
        assert!(c.iter().all(|(_, n)| *n == 2.0));
        assert!(counts("   ").is_empty());
    }
}
