//! E-Rezept tokens (gematik, gemSpec_DM_eRp): what a patient sends to have a prescription
//! dispensed. A token is `Task/<prescription id>/$accept?ac=<access code>`; the printout's
//! DataMatrix codes carry `{"urls": ["Task/…/$accept?ac=…", …]}` (up to three per code, and a
//! collective code with all). Customers also paste the token, or the JSON, as text.
//!
//! A prescription id is `FFF.NNN.NNN.NNN.NNN.CC`: the flow type (160, 169, 200, 209), twelve
//! digits, and two check digits by ISO 7064 MOD 97-10 (the 17 digits, read as a number, are
//! 1 modulo 97). The access code is 64 hexadecimal characters. Both are checked here, so a
//! mistyped or made-up token is not taken for one.

use serde::{Deserialize, Serialize};

/// One e-prescription: enough for the pharmacy's software to fetch it from the TI.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Prescription {
    /// The prescription id, `160.123.456.789.123.58`.
    pub task_id: String,
    /// 64 lower-case hex characters.
    pub access_code: String,
}

impl Prescription {
    /// The token as the printout encodes it.
    pub fn token(&self) -> String {
        format!("Task/{}/$accept?ac={}", self.task_id, self.access_code)
    }
}

/// Flow types of prescriptions a pharmacy dispenses (gemSpec_DM_eRp: 160 medicines, 169
/// medicines dispensed by the prescriber's choice, 200 and 209 for PKV insured).
const FLOW_TYPES: &[&str] = &["160", "169", "200", "209"];

/// Whether `id` is a prescription id with a valid flow type and check digits.
pub fn valid_task_id(id: &str) -> bool {
    let groups: Vec<&str> = id.split('.').collect();
    let lengths = [3, 3, 3, 3, 3, 2];
    if groups.len() != lengths.len()
        || groups
            .iter()
            .zip(lengths)
            .any(|(g, n)| g.len() != n || !g.bytes().all(|b| b.is_ascii_digit()))
        || !FLOW_TYPES.contains(&groups[0])
    {
        return false;
    }
    // ISO 7064 MOD 97-10 over the 17 digits: digit by digit, so no big numbers.
    let rest = groups
        .concat()
        .bytes()
        .fold(0u32, |acc, b| (acc * 10 + u32::from(b - b'0')) % 97);
    rest == 1
}

fn valid_access_code(code: &str) -> bool {
    code.len() == 64 && code.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Every valid token in `text` (pasted tokens, a pasted DataMatrix JSON), each once, in the
/// order found. Anything that only looks like one (a wrong check digit, a short access code)
/// is left out.
pub fn find_in_text(text: &str) -> Vec<Prescription> {
    let mut out: Vec<Prescription> = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("Task/") {
        let candidate = &rest[at + "Task/".len()..];
        rest = candidate;
        let Some((id, after)) = candidate.split_once('/') else {
            continue;
        };
        let Some(code) = after
            .strip_prefix("$accept?ac=")
            .map(|c| c.get(..64).unwrap_or(c))
        else {
            continue;
        };
        let code_ends_there = after
            .strip_prefix("$accept?ac=")
            .and_then(|c| c.as_bytes().get(64))
            .is_none_or(|b| !b.is_ascii_hexdigit());
        if valid_task_id(id) && valid_access_code(code) && code_ends_there {
            let p = Prescription {
                task_id: id.to_owned(),
                access_code: code.to_ascii_lowercase(),
            };
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// The tokens of a DataMatrix or QR payload (`{"urls": [...]}`, or a bare token); empty for
/// a code with anything else in it.
pub fn from_code_payload(payload: &str) -> Vec<Prescription> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(payload)
        && let Some(urls) = v.get("urls").and_then(serde_json::Value::as_array)
    {
        let mut out: Vec<Prescription> = Vec::new();
        for url in urls.iter().filter_map(serde_json::Value::as_str) {
            for p in find_in_text(url) {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        return out;
    }
    find_in_text(&payload.replace("\\/", "/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AC: &str = "777bea0e13cc9c42ceec14aec3ddee2263325dc2c6c699db115f58fe423607ea";

    #[test]
    fn prescription_ids_have_a_flow_type_and_check_digits() {
        // The example of gematik's documentation, and check digits computed by MOD 97-10.
        assert!(valid_task_id("160.123.456.789.123.58"));
        assert!(valid_task_id("160.000.000.000.001.54"));
        assert!(valid_task_id("209.123.456.789.012.25"));
        assert!(
            !valid_task_id("160.123.456.789.123.59"),
            "wrong check digits"
        );
        assert!(
            !valid_task_id("161.123.456.789.123.58"),
            "unknown flow type"
        );
        assert!(!valid_task_id("160.123.456.789.12358"));
        assert!(!valid_task_id("160.123.456.789.123.5a"));
        assert!(!valid_task_id(""));
    }

    #[test]
    fn tokens_are_found_in_text_checked_and_counted_once() {
        let t1 = format!("Task/160.123.456.789.123.58/$accept?ac={AC}");
        let t2 = format!(
            "Task/160.000.000.000.001.54/$accept?ac={}",
            AC.to_uppercase()
        );
        let text = format!("Hallo, hier mein Rezept: {t1} und noch {t2}. Nochmal: {t1}");
        let found = find_in_text(&text);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].task_id, "160.123.456.789.123.58");
        assert_eq!(found[1].access_code, AC, "access codes in lower case");
        assert_eq!(found[0].token(), t1);
        for bad in [
            format!("Task/160.123.456.789.123.59/$accept?ac={AC}"),
            format!("Task/160.123.456.789.123.58/$accept?ac={}", &AC[..63]),
            format!("Task/160.123.456.789.123.58/$accept?ac={AC}0"),
            format!("Task/160.123.456.789.123.58/$accept?ac={}", "g".repeat(64)),
            "Task/".to_owned(),
            "Task/160.123.456.789.123.58".to_owned(),
        ] {
            assert!(find_in_text(&bad).is_empty(), "{bad}");
        }
        assert!(find_in_text("Ist mein Rezept fertig?").is_empty());
    }

    #[test]
    fn a_code_payload_gives_its_tokens() {
        // The printout's DataMatrix content (gemSpec_DM_eRp; gematik/eRezept-Examples).
        let payload = format!(
            r#"{{"urls":["Task/160.123.456.789.123.58/$accept?ac={AC}","Task/160.000.000.000.001.54/$accept?ac={AC}"]}}"#
        );
        assert_eq!(from_code_payload(&payload).len(), 2);
        let escaped = payload.replace('/', "\\/");
        assert_eq!(
            from_code_payload(&escaped).len(),
            2,
            "JSON may escape slashes"
        );
        assert!(from_code_payload(r#"{"urls":["https://example.org"]}"#).is_empty());
        assert!(from_code_payload("WIFI:S:Apotheke;;").is_empty());
    }
}
