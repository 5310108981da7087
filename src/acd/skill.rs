//! Skills as small interned ids, and the requirement check every routing decision makes.
//!
//! Names are interned once (at configuration, login or arrival) so that deciding whether
//! an agent fits a call is a merge of two short sorted arrays, not string hashing.

use std::collections::HashMap;

use super::AcdError;

/// The lowest and highest skill level an agent can have or a queue can ask for.
pub const LEVELS: std::ops::RangeInclusive<u8> = 1..=10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SkillId(u32);

/// Interns skill names. Ids are never reused, so they can be stored anywhere.
#[derive(Debug, Default)]
pub(crate) struct SkillBook {
    ids: HashMap<String, SkillId>,
    /// Names by id, for views that show skills to people.
    names: Vec<String>,
}

impl SkillBook {
    pub(crate) fn id(&mut self, name: &str) -> SkillId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = SkillId(self.ids.len() as u32);
        self.ids.insert(name.to_string(), id);
        self.names.push(name.to_string());
        id
    }

    pub(crate) fn name(&self, id: SkillId) -> &str {
        &self.names[id.0 as usize]
    }

    /// `levels` with their names again, in name order.
    pub(crate) fn named(&self, levels: &Levels) -> Vec<(String, u8)> {
        let mut out: Vec<(String, u8)> = levels
            .0
            .iter()
            .map(|(id, level)| (self.names[id.0 as usize].clone(), *level))
            .collect();
        out.sort();
        out
    }

    /// Interns `(name, level)` pairs, checking every level; a skill named twice keeps its
    /// highest level.
    pub(crate) fn levels(&mut self, skills: &[(String, u8)]) -> Result<Levels, AcdError> {
        let mut out = Vec::with_capacity(skills.len());
        for (name, level) in skills {
            if !LEVELS.contains(level) {
                return Err(AcdError::LevelOutOfRange {
                    skill: name.clone(),
                    level: *level,
                });
            }
            out.push((self.id(name), *level));
        }
        Ok(Levels::from_unsorted(out))
    }
}

/// A set of `(skill, level)` pairs sorted by skill, one entry per skill. An agent's
/// skills and a call's requirement (minimum levels) are both `Levels`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct Levels(Vec<(SkillId, u8)>);

impl Levels {
    fn from_unsorted(mut pairs: Vec<(SkillId, u8)>) -> Self {
        // Highest level first within a skill, so dedup keeps it.
        pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        pairs.dedup_by_key(|p| p.0);
        Levels(pairs)
    }

    /// The stricter of two requirements: every skill of either, at the higher minimum.
    pub(crate) fn union(&self, other: &Levels) -> Levels {
        Levels::from_unsorted(self.0.iter().chain(&other.0).copied().collect())
    }

    /// Lowers every minimum by `by`, never below level 1: lowering widens the pool of
    /// agents but never makes a skill optional (dropping it does).
    pub(crate) fn lower(&mut self, by: u8) {
        for (_, level) in &mut self.0 {
            *level = level.saturating_sub(by).max(*LEVELS.start());
        }
    }

    pub(crate) fn remove(&mut self, skill: SkillId) {
        self.0.retain(|(s, _)| *s != skill);
    }

    pub(crate) fn level(&self, skill: SkillId) -> u8 {
        self.0
            .binary_search_by_key(&skill, |p| p.0)
            .map_or(0, |i| self.0[i].1)
    }

    /// Whether `agent` has every skill of this requirement at or above its minimum.
    pub(crate) fn met_by(&self, agent: &Levels) -> bool {
        let mut have = agent.0.iter().peekable();
        'need: for &(skill, min) in &self.0 {
            while let Some(&&(s, level)) = have.peek() {
                if s < skill {
                    have.next();
                    continue;
                }
                if s == skill && level >= min {
                    continue 'need;
                }
                return false;
            }
            return false;
        }
        true
    }

    /// The first skill `agent` lacks or has below the minimum: (skill, needed, has).
    pub(crate) fn first_unmet(&self, agent: &Levels) -> Option<(SkillId, u8, u8)> {
        self.0.iter().find_map(|&(skill, min)| {
            let have = agent.level(skill);
            (have < min).then_some((skill, min, have))
        })
    }

    /// The sum of `agent`'s levels in this requirement's skills: how BestSkill ranks.
    pub(crate) fn score(&self, agent: &Levels) -> u32 {
        self.0.iter().map(|&(s, _)| u32::from(agent.level(s))).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(book: &mut SkillBook, pairs: &[(&str, u8)]) -> Levels {
        let owned: Vec<_> = pairs.iter().map(|(n, l)| (n.to_string(), *l)).collect();
        book.levels(&owned).unwrap()
    }

    #[test]
    fn requirement_needs_every_skill_at_its_minimum() {
        let mut book = SkillBook::default();
        let need = levels(&mut book, &[("billing", 5), ("french", 3)]);
        assert!(need.met_by(&levels(&mut book, &[("billing", 5), ("french", 9)])));
        assert!(need.met_by(&levels(
            &mut book,
            &[("aaa", 1), ("billing", 7), ("french", 3), ("zzz", 2)]
        )));
        assert!(!need.met_by(&levels(&mut book, &[("billing", 4), ("french", 9)])));
        assert!(!need.met_by(&levels(&mut book, &[("billing", 9)])));
        assert!(Levels::default().met_by(&Levels::default()));
    }

    #[test]
    fn union_keeps_the_higher_minimum_and_lower_stops_at_one() {
        let mut book = SkillBook::default();
        let queue = levels(&mut book, &[("billing", 3)]);
        let call = levels(&mut book, &[("billing", 6), ("spanish", 2)]);
        let mut both = queue.union(&call);
        assert_eq!(both, levels(&mut book, &[("billing", 6), ("spanish", 2)]));
        both.lower(4);
        assert_eq!(both, levels(&mut book, &[("billing", 2), ("spanish", 1)]));
    }

    #[test]
    fn levels_outside_one_to_ten_are_refused() {
        let mut book = SkillBook::default();
        let err = book.levels(&[("billing".into(), 11)]).unwrap_err();
        assert!(err.to_string().contains("between 1 and 10"), "{err}");
        assert!(book.levels(&[("billing".into(), 0)]).is_err());
    }
}
