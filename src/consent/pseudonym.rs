//! Pseudonyms and the cross-vendor linkage key, bit-exact as consent-and-pseudonyms.md defines
//! them. Keys are secrets: [`PseudonymKey`] never shows its bytes in `Debug`.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Canonical paths whose pseudonym input is `<vendor>/<value>`.
pub const VENDOR_SCOPED: [&str; 4] = [
    "source.record_id",
    "client.client_id",
    "client.household_id",
    "case.case_id",
];

/// A recipient's pseudonym key: key id and secret (≥ 32 bytes).
#[derive(Clone)]
pub struct PseudonymKey {
    /// Key id, part of every pseudonym.
    pub kid: String,
    secret: SecretSlice<u8>,
    /// HMAC-SHA256 keyed with the secret, cloned for every pseudonym (saves hashing the key's
    /// pads each time).
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PseudonymKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl PseudonymKey {
    /// A key from its id and secret bytes.
    pub fn new(kid: impl Into<String>, secret: Vec<u8>) -> Self {
        let keyed = Hmac::<Sha256>::new_from_slice(&secret).expect("HMAC takes keys of any length");
        PseudonymKey {
            kid: kid.into(),
            secret: SecretSlice::from(secret),
            keyed,
        }
    }

    /// Length of the secret in bytes.
    pub fn secret_len(&self) -> usize {
        self.secret.expose_secret().len()
    }

    /// `"p1." + kid + "." + hex(HMAC-SHA256(key, path ‖ 0x00 ‖ input)[0..16])`.
    pub fn pseudonym(&self, path: &str, input: &str) -> String {
        let mut mac = self.keyed.clone();
        mac.update(path.as_bytes());
        mac.update(&[0]);
        mac.update(input.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(4 + self.kid.len() + 32);
        out.push_str("p1.");
        out.push_str(&self.kid);
        out.push('.');
        out.push_str(&hex::encode(&digest[..16]));
        out
    }

    /// The pseudonym of a canonical field value (vendor-scoped ids get `<vendor>/` in front).
    pub fn field(&self, path: &str, vendor: &str, value: &str) -> String {
        if VENDOR_SCOPED.contains(&path) {
            let mut input = String::with_capacity(vendor.len() + 1 + value.len());
            input.push_str(vendor);
            input.push('/');
            input.push_str(value);
            self.pseudonym(path, &input)
        } else {
            self.pseudonym(path, value)
        }
    }

    /// The linkage key of a person.
    pub fn linkage_key(
        &self,
        family_name: &str,
        given_names: Option<&str>,
        birth_date: &str,
    ) -> String {
        self.pseudonym(
            "client.linkage_key",
            &linkage_material(family_name, given_names, birth_date),
        )
    }
}

/// `norm(family_name) | norm(first given name) | birth_date`.
pub fn linkage_material(family_name: &str, given_names: Option<&str>, birth_date: &str) -> String {
    let first = given_names
        .and_then(|g| g.split([' ', '-']).find(|t| !t.is_empty()))
        .unwrap_or("");
    format!("{}|{}|{}", norm(family_name), norm(first), birth_date)
}

/// The name normalisation of the linkage key.
pub fn norm(s: &str) -> String {
    let mut replaced = String::with_capacity(s.len() + 4);
    for c in s.nfc() {
        match c {
            'ä' | 'Ä' => replaced.push_str("AE"),
            'ö' | 'Ö' => replaced.push_str("OE"),
            'ü' | 'Ü' => replaced.push_str("UE"),
            'ß' => replaced.push_str("SS"),
            'Ł' | 'ł' => replaced.push('L'),
            'Ø' | 'ø' => replaced.push('O'),
            'Æ' | 'æ' => replaced.push_str("AE"),
            'Œ' | 'œ' => replaced.push_str("OE"),
            'Đ' | 'đ' => replaced.push('D'),
            'ı' => replaced.push('I'),
            other => replaced.push(other),
        }
    }
    replaced
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_uppercase)
        .filter(char::is_ascii_uppercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vector_of_the_examples() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/examples/pseudonyms.json"
        );
        let text = std::fs::read_to_string(path)
            .or_else(|_| {
                std::fs::read_to_string(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/conformance-tests/vectors/pseudonyms.json"
                ))
            })
            .expect("pseudonym vectors");
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let vectors = doc["vectors"].as_array().unwrap();
        assert!(!vectors.is_empty());
        for v in vectors {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            let key = PseudonymKey::new(s("kid"), hex::decode(s("key_hex")).unwrap());
            let path = s("path");
            let input = if path == "client.linkage_key" {
                let given = v["given_names"].as_str();
                let material = linkage_material(&s("family_name"), given, &s("birth_date"));
                assert_eq!(material, s("input"), "material of {}", s("name"));
                material
            } else if v.get("vendor").is_some() {
                let input = format!("{}/{}", s("vendor"), s("value"));
                assert_eq!(input, s("input"), "input of {}", s("name"));
                assert_eq!(key.field(&path, &s("vendor"), &s("value")), s("expected"));
                input
            } else {
                s("input")
            };
            assert_eq!(key.pseudonym(&path, &input), s("expected"), "{}", s("name"));
        }
    }

    #[test]
    fn norm_examples_of_the_spec() {
        assert_eq!(norm("Müller-Lüdenscheidt"), "MUELLERLUEDENSCHEIDT");
        assert_eq!(norm("Ayşe"), "AYSE");
        assert_eq!(norm("ẞÐÞŋ"), "");
    }
}
