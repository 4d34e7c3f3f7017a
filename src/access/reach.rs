//! Row reach: which owners' records a caller sees. Own records for reps; for managers
//! also those of every user in their team and in the teams under it; everything for
//! roles that reach all.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::Row;

use super::ReachRule;
use crate::store::{Store, StoreError};

/// The owners whose records a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    All,
    /// User ids; records without an owner are outside this reach.
    Owners(Arc<HashSet<String>>),
}

impl Reach {
    pub fn allows(&self, owner: Option<&str>) -> bool {
        match self {
            Reach::All => true,
            Reach::Owners(owners) => owner.is_some_and(|o| owners.contains(o)),
        }
    }

    /// The owner list a query filters on; `None` means no filter.
    pub fn owner_ids(&self) -> Option<Vec<String>> {
        match self {
            Reach::All => None,
            Reach::Owners(owners) => {
                let mut ids: Vec<String> = owners.iter().cloned().collect();
                ids.sort();
                Some(ids)
            }
        }
    }
}

/// Refuses a team tree with a cycle, naming it: `a > b > a`.
pub fn check_team_tree(parents: &HashMap<String, Option<String>>) -> Result<(), String> {
    for start in parents.keys() {
        let mut path = vec![start.as_str()];
        let mut at = start.as_str();
        while let Some(Some(parent)) = parents.get(at) {
            if path.contains(&parent.as_str()) {
                path.push(parent);
                return Err(format!("team tree has a cycle: {}", path.join(" > ")));
            }
            path.push(parent);
            at = parent;
        }
    }
    Ok(())
}

/// The parent of every team, for tree checks and reach.
pub async fn team_parents(store: &Store) -> Result<HashMap<String, Option<String>>, StoreError> {
    let rows = sqlx::query("SELECT id, parent_id FROM teams")
        .fetch_all(store.pool())
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("id")?, row.try_get("parent_id")?)))
        .collect()
}

/// The reach of a user with `rule`, in team `team_id`.
pub async fn reach_of(
    store: &Store,
    rule: ReachRule,
    user_id: &str,
    team_id: Option<&str>,
) -> Result<Reach, StoreError> {
    let mut owners = HashSet::from([user_id.to_owned()]);
    match (rule, team_id) {
        (ReachRule::All, _) => return Ok(Reach::All),
        (ReachRule::Own, _) | (ReachRule::Team, None) => {}
        (ReachRule::Team, Some(team)) => {
            let parents = team_parents(store).await?;
            let teams = teams_under(&parents, team);
            // Bound parameters only; teams are few, so one statement per chunk is enough.
            for chunk in teams.chunks(200) {
                let placeholders: Vec<String> =
                    (1..=chunk.len()).map(|n| format!("${n}")).collect();
                let sql = format!(
                    "SELECT id FROM users WHERE team_id IN ({})",
                    placeholders.join(", ")
                );
                let mut query = sqlx::query_scalar::<_, String>(&sql);
                for team in chunk {
                    query = query.bind(team.as_str());
                }
                owners.extend(query.fetch_all(store.pool()).await?);
            }
        }
    }
    Ok(Reach::Owners(Arc::new(owners)))
}

/// `team` and every team below it.
fn teams_under(parents: &HashMap<String, Option<String>>, team: &str) -> Vec<String> {
    let mut found = vec![team.to_owned()];
    let mut index = 0;
    while index < found.len() {
        let current = found[index].clone();
        for (child, parent) in parents {
            if parent.as_deref() == Some(current.as_str()) && !found.contains(child) {
                found.push(child.clone());
            }
        }
        index += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(edges: &[(&str, Option<&str>)]) -> HashMap<String, Option<String>> {
        edges
            .iter()
            .map(|(t, p)| (t.to_string(), p.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn teams_under_follows_every_level() {
        let parents = tree(&[
            ("sales", None),
            ("emea", Some("sales")),
            ("uk", Some("emea")),
            ("apac", Some("sales")),
        ]);
        let mut under = teams_under(&parents, "emea");
        under.sort();
        assert_eq!(under, ["emea", "uk"]);
        assert_eq!(teams_under(&parents, "sales").len(), 4);
    }

    #[test]
    fn a_cycle_is_named() {
        let parents = tree(&[("a", Some("b")), ("b", Some("c")), ("c", Some("a"))]);
        let error = check_team_tree(&parents).unwrap_err();
        assert!(error.starts_with("team tree has a cycle: "), "{error}");
        assert!(check_team_tree(&tree(&[("a", None), ("b", Some("a"))])).is_ok());
    }

    #[test]
    fn owners_reach_excludes_unowned_records() {
        let reach = Reach::Owners(Arc::new(HashSet::from(["u1".to_owned()])));
        assert!(reach.allows(Some("u1")));
        assert!(!reach.allows(Some("u2")));
        assert!(!reach.allows(None));
        assert!(Reach::All.allows(None));
    }
}
