//! Zoom's exported attendee report, unpacked into one table before its columns are matched.
//!
//! The webinar attendee report (Reports → Webinars → Attendee report → CSV) is sectioned:
//!
//! ```text
//! Attendee Report,
//! Report Generated:,"11/20/2024 10:15 AM"
//! Topic,Webinar ID,Actual Start Time,Actual Duration (minutes),# Registered,…
//! "Q4 Product Launch","812 3456 7890","11/19/2024 04:00:00 PM",62,3,…
//! Host Details,
//! Attended,User Name (Original Name),Email,Join Time,Leave Time,Time in Session (minutes),…
//! …
//! Panelist Details,
//! …
//! Attendee Details,
//! Attended,User Name (Original Name),First Name,Last Name,Email,Phone,…,Time in Session (minutes),…
//! Yes,"Ada Lovelace",Ada,Lovelace,ada@example.com,…,45,…
//! ```
//!
//! Only the attendee section becomes rows; the summary's topic, id and start time are copied
//! onto each. A file whose first row is already the attendee header (an xlsx someone tidied,
//! a meeting's participant list) is read as a plain table. Every row also gets
//! `duration_seconds` (from the minutes column) and `attendance` (attended or not).

use serde_json::{Map, Value};

/// What one read row is to the import.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// The attendee table's header: match these columns.
    Header(Vec<String>),
    /// An attendee row.
    Data,
    /// Summary, host and panelist rows, section titles.
    Skip,
}

#[derive(Debug, Default)]
pub struct ZoomReport {
    /// The attendee table's columns, once found.
    header: Option<Vec<String>>,
    /// The title of the section being read (`Attendee Details` …).
    section: Option<String>,
    /// The next row is a section's header.
    header_next: bool,
    /// The summary's header row, waiting for its values.
    summary_header: Option<Vec<String>>,
    /// `event_topic`, `event_id`, `event_start` from the summary.
    event: Map<String, Value>,
}

fn compact(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// A row that only names a section: one non-empty cell ending in "Details".
fn section_title(cells: &[String]) -> Option<&str> {
    let mut filled = cells.iter().filter(|c| !c.trim().is_empty());
    let only = filled.next()?;
    (filled.next().is_none() && compact(only).ends_with("details")).then_some(only.as_str())
}

fn is_attendee_section(title: &str) -> bool {
    let title = compact(title);
    title.contains("attendee") || title.contains("participant")
}

/// A header row of an attendee table: it has an email column.
fn is_attendee_header(cells: &[String]) -> bool {
    cells
        .iter()
        .any(|c| matches!(compact(c).as_str(), "email" | "useremail" | "emailaddress"))
}

impl ZoomReport {
    /// The reader's first row (its "header").
    pub fn first_row(&mut self, cells: &[String]) -> Line {
        if is_attendee_header(cells) {
            self.header = Some(cells.to_vec());
            return Line::Header(cells.to_vec());
        }
        self.row(cells)
    }

    pub fn row(&mut self, cells: &[String]) -> Line {
        if self.header.is_some() && self.section.as_deref().is_none_or(is_attendee_section) {
            // A plain table, or inside the attendee section: data until the next section.
            if let Some(title) = section_title(cells) {
                self.open_section(title);
                return Line::Skip;
            }
            return Line::Data;
        }
        if let Some(title) = section_title(cells) {
            self.open_section(title);
            return Line::Skip;
        }
        if self.header_next {
            self.header_next = false;
            if self.section.as_deref().is_some_and(is_attendee_section) {
                self.header = Some(cells.to_vec());
                return Line::Header(cells.to_vec());
            }
            return Line::Skip;
        }
        if self.section.is_none() {
            self.read_summary(cells);
        }
        Line::Skip
    }

    fn open_section(&mut self, title: &str) {
        self.section = Some(title.to_owned());
        self.header_next = true;
        // A second attendee section (rare) repeats its header; take it again.
        if is_attendee_section(title) {
            self.header = None;
        }
    }

    fn read_summary(&mut self, cells: &[String]) {
        let has = |name: &str| cells.iter().any(|c| compact(c) == name);
        if has("topic") {
            self.summary_header = Some(cells.to_vec());
            return;
        }
        let Some(header) = self.summary_header.take() else {
            return;
        };
        for (name, value) in header.iter().zip(cells) {
            let key = match compact(name).as_str() {
                "topic" => "event_topic",
                "webinarid" | "meetingid" | "id" => "event_id",
                "actualstarttime" | "starttime" => "event_start",
                _ => continue,
            };
            if !value.trim().is_empty() {
                self.event
                    .insert(key.to_owned(), Value::from(value.trim().to_owned()));
            }
        }
    }

    /// Fields every attendee row gets: the event, the time in session in seconds, and
    /// whether the person attended.
    pub fn extra_fields(&self, cells: &[String]) -> Map<String, Value> {
        let mut fields = self.event.clone();
        let header = self.header.as_deref().unwrap_or_default();
        let cell = |wanted: &[&str]| {
            header
                .iter()
                .position(|h| wanted.contains(&compact(h).as_str()))
                .and_then(|i| cells.get(i))
                .map(|c| c.trim())
                .filter(|c| !c.is_empty() && *c != "--")
        };
        let minutes = cell(&["timeinsessionminutes", "durationminutes", "duration"])
            .and_then(|m| m.replace(',', ".").parse::<f64>().ok());
        if let Some(minutes) = minutes {
            fields.insert(
                "duration_seconds".into(),
                Value::from((minutes * 60.0).round() as i64),
            );
        }
        let attended = match cell(&["attended"]) {
            Some(answer) => answer.eq_ignore_ascii_case("yes"),
            None => minutes.is_some_and(|m| m > 0.0),
        };
        let topic = self
            .event
            .get("event_topic")
            .and_then(Value::as_str)
            .unwrap_or("the event");
        let attendance = if attended {
            format!("Attended {topic}")
        } else {
            format!("Registered for {topic}, did not attend")
        };
        fields.insert("attendance".into(), Value::from(attendance));
        fields.insert("attended".into(), Value::from(attended));
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(line: &str) -> Vec<String> {
        line.split(',').map(str::to_owned).collect()
    }

    #[test]
    fn only_the_attendee_section_is_data_and_carries_the_event() {
        let mut report = ZoomReport::default();
        assert_eq!(report.first_row(&cells("Attendee Report")), Line::Skip);
        let lines = [
            "Report Generated:,11/20/2024 10:15 AM",
            "Topic,Webinar ID,Actual Start Time,Actual Duration (minutes)",
            "Q4 Launch,812 3456 7890,11/19/2024 04:00:00 PM,62",
            "Host Details",
            "Attended,User Name (Original Name),Email,Time in Session (minutes)",
            "Yes,Host,host@example.com,62",
            "Attendee Details",
        ];
        for line in lines {
            assert_eq!(report.row(&cells(line)), Line::Skip, "{line}");
        }
        let header = cells("Attended,First Name,Email,Time in Session (minutes)");
        assert_eq!(report.row(&header), Line::Header(header.clone()));
        let ada = cells("Yes,Ada,ada@example.com,45");
        assert_eq!(report.row(&ada), Line::Data);
        let extra = report.extra_fields(&ada);
        assert_eq!(extra["event_topic"], "Q4 Launch");
        assert_eq!(extra["event_id"], "812 3456 7890");
        assert_eq!(extra["duration_seconds"], 2700);
        assert_eq!(extra["attendance"], "Attended Q4 Launch");
        let absent = cells("No,Bob,bob@example.com,--");
        assert_eq!(report.row(&absent), Line::Data);
        let extra = report.extra_fields(&absent);
        assert!(extra.get("duration_seconds").is_none());
        assert_eq!(extra["attended"], false);
    }

    #[test]
    fn a_plain_participant_list_is_a_table() {
        let mut report = ZoomReport::default();
        let header =
            cells("Name (Original Name),User Email,Join Time,Leave Time,Duration (Minutes)");
        assert_eq!(report.first_row(&header), Line::Header(header.clone()));
        let row = cells("Ada Lovelace,ada@example.com,x,y,30");
        assert_eq!(report.row(&row), Line::Data);
        assert_eq!(report.extra_fields(&row)["duration_seconds"], 1800);
    }
}
