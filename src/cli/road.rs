//! `kubectl lfu road --from X --to Y`: the road with nothing installed, from the same planner the
//! operator runs: the stops, each hop's gates, what it destroys for good, and why a stop is
//! required.

use crate::catalog::Catalog;
use crate::catalog::road::{HopMode, road};
use crate::version::Version;

/// The road as text, or why there is none (one line).
pub fn road_text(c: &Catalog, from: &str, to: &str, accept_unknown: bool) -> Result<String, String> {
    let parse =
        |v: &str, which: &str| Version::parse(v).ok_or_else(|| format!("--{which} {v:?} is not a release (x.y.z)"));
    let (from, to) = (parse(from, "from")?, parse(to, "to")?);
    let hops = road(c, from, to, accept_unknown).map_err(|e| e.to_string())?;
    let mut out = match hops.as_slice() {
        [] => return Ok(format!("Langfuse {from} is already at {to}: nothing to do\n")),
        _ => {
            let stops: Vec<String> = hops.iter().map(|h| h.to.to_string()).collect();
            format!("{from} -> {}  ({} hops)\n", stops.join(" -> "), hops.len())
        }
    };
    for (i, hop) in hops.iter().enumerate() {
        let how = match hop.mode {
            HopMode::BesideV2 => {
                "beside v2: v3 web and worker created, traffic switched, v2 retired after the counts agree"
            }
            HopMode::InPlace => "in place: web first, one pod at a time, then the worker",
        };
        out.push_str(&format!("\n{}. {} -> {}  {how}\n", i + 1, hop.from, hop.to));
        if let Some(why) = &hop.required_because {
            out.push_str(&format!("   required stop: {why}\n"));
        }
        for gate in &hop.gates {
            out.push_str(&format!("   gate: {gate}\n"));
        }
        match &hop.irreversible {
            Some(what) => out.push_str(&format!("   cannot be undone: {what}\n")),
            None if hop.mode == HopMode::BesideV2 => {
                out.push_str("   can be undone (spec.abort): back to v2 until v2 is retired\n")
            }
            None => {
                let (was, will) = (c.schema_height(hop.from), c.schema_height(hop.to));
                match will > was {
                    true => out.push_str(&format!(
                        "   can be undone (spec.abort) until the new web raises ClickHouse's schema above {was}, the height {} knows (it ships {will})\n",
                        hop.from
                    )),
                    false => out.push_str("   can be undone (spec.abort)\n"),
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_v2_to_v4_every_stop_its_gates_and_what_it_destroys() {
        let text = road_text(&Catalog::builtin(), "2.95.9", "4.16.0", false).unwrap();
        assert!(
            text.starts_with("2.95.9 -> 3.29.0 -> 3.225.4 -> 4.16.0  (3 hops)"),
            "{text}"
        );
        for words in [
            "1. 2.95.9 -> 3.29.0  beside v2",
            "3. 3.225.4 -> 4.16.0  in place",
            "required stop: v4.0.0 deletes",
            "gate: ClickHouse >= 25.12",
            "gate: ClickHouse holds every PostgreSQL row of the copies",
            "cannot be undone: Postgres tables traces",
            "back to v2 until v2 is retired",
            "cannot be undone: Postgres views traces_view",
        ] {
            assert!(text.contains(words), "{words}: {text}");
        }
    }

    #[test]
    fn no_road_is_one_line_that_says_why() {
        let c = Catalog::builtin();
        let e = road_text(&c, "2.50.0", "4.16.0", false).unwrap_err();
        assert!(e.contains("older than 2.92.0") && !e.contains('\n'), "{e}");
        assert!(
            road_text(&c, "3.225.4", "9.0.0", false)
                .unwrap_err()
                .contains("newer than")
        );
        assert!(road_text(&c, "3.x", "4.16.0", false).unwrap_err().contains("--from"));
        assert!(
            road_text(&c, "4.16.0", "4.16.0", false)
                .unwrap()
                .contains("nothing to do")
        );
    }

    #[test]
    fn an_in_place_hop_is_undone_only_while_the_schema_is_one_the_older_release_knows() {
        let text = road_text(&Catalog::builtin(), "3.100.0", "3.225.4", false).unwrap();
        assert!(
            text.contains(
                "until the new web raises ClickHouse's schema above 26, the height 3.100.0 knows (it ships 37)"
            ),
            "{text}"
        );
    }
}
