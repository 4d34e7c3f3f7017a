//! Reads a spreadsheet file as rows of text cells, in batches, with bounded memory.
//!
//! xlsx/xlsm/xlsb stream their sheet XML/records cell by cell; xls and ods are read a sheet
//! at a time (calamine has no streaming reader for them; the upload cap bounds them);
//! csv/tsv stream through the `csv` crate after encoding and delimiter sniffing. The first
//! non-empty row is the header; blank rows are skipped; trailing empty cells are trimmed.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use calamine::{Data, DataRef, Ods, Reader, Xls, Xlsb, Xlsx, open_workbook};
use encoding_rs::{Decoder, Encoding, UTF_8, WINDOWS_1252};
use serde::Serialize;

use super::cells::{format_datetime, format_number};
use super::error::ImportError;

/// Rows handed to the sink at a time.
pub const DEFAULT_BATCH: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Xlsx,
    Xlsm,
    Xlsb,
    Xls,
    Ods,
    Csv,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Xlsx => "xlsx",
            Format::Xlsm => "xlsm",
            Format::Xlsb => "xlsb",
            Format::Xls => "xls",
            Format::Ods => "ods",
            Format::Csv => "csv",
        }
    }

    fn is_zip(self) -> bool {
        matches!(
            self,
            Format::Xlsx | Format::Xlsm | Format::Xlsb | Format::Ods
        )
    }
}

/// Caps that keep a hostile or accidental file from exhausting memory or time.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rows: u64,
    pub max_columns: usize,
    /// Sum of the declared uncompressed sizes of a zip container's members.
    pub max_uncompressed_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_rows: 5_000_000,
            max_columns: 1_000,
            max_uncompressed_bytes: 4 << 30,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    pub sheet: Option<String>,
    pub limits: Limits,
    pub batch_size: usize,
}

/// One data row: its 1-based row (or CSV line) number, its cells, and cell problems
/// found while reading (formula errors), as `(column index, reason)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub number: u64,
    pub cells: Vec<String>,
    pub problems: Vec<(usize, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Header {
    pub row: u64,
    pub names: Vec<String>,
    pub format: Format,
    pub sheet: Option<String>,
}

pub enum Event<'a> {
    Header(&'a Header),
    Rows(Vec<Row>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadSummary {
    pub format: Format,
    pub sheet: Option<String>,
    pub header_row: u64,
    pub rows: u64,
    /// True when the sink stopped the read early.
    pub stopped: bool,
}

pub type Sink<'a> = dyn FnMut(Event<'_>) -> Result<Flow, ImportError> + 'a;

/// The format a file name (and, lacking a known extension, its first bytes) says.
pub fn detect_format(file_name: &str, path: &Path) -> Result<Format, ImportError> {
    let ext = Path::new(file_name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "xlsx" => return Ok(Format::Xlsx),
        "xlsm" => return Ok(Format::Xlsm),
        "xlsb" => return Ok(Format::Xlsb),
        "xls" => return Ok(Format::Xls),
        "ods" => return Ok(Format::Ods),
        "csv" | "tsv" | "txt" => return Ok(Format::Csv),
        "" => {}
        other => return Err(ImportError::UnsupportedType(format!(".{other}"))),
    }
    let mut head = [0_u8; 512];
    let n = File::open(path)?.read(&mut head)?;
    let head = &head[..n];
    if head.starts_with(b"PK\x03\x04") {
        Ok(Format::Xlsx)
    } else if head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0]) {
        Ok(Format::Xls)
    } else if !head.contains(&0) {
        Ok(Format::Csv)
    } else {
        Err(ImportError::UnsupportedType("unknown binary".into()))
    }
}

/// Reads `path` and hands the header, then batches of rows, to `sink`.
pub fn read(
    path: &Path,
    format: Format,
    options: &ReadOptions,
    sink: &mut Sink<'_>,
) -> Result<ReadSummary, ImportError> {
    let mut collector = Collector::new(format, options, sink);
    if format.is_zip() {
        check_zip(path, format, &options.limits)?;
    }
    match format {
        Format::Xlsx | Format::Xlsm => read_xlsx(path, format, options, &mut collector)?,
        Format::Xlsb => read_xlsb(path, options, &mut collector)?,
        Format::Xls => {
            let mut book: Xls<_> = open_workbook(path).map_err(|e| book_error(format, e))?;
            read_ranges(&mut book, format, options, &mut collector)?;
        }
        Format::Ods => {
            let mut book: Ods<_> = open_workbook(path).map_err(|e| book_error(format, e))?;
            read_ranges(&mut book, format, options, &mut collector)?;
        }
        Format::Csv => read_csv(path, &mut collector)?,
    }
    collector.finish()
}

fn book_error(format: Format, error: impl std::fmt::Display) -> ImportError {
    let detail = error.to_string();
    if detail.to_ascii_lowercase().contains("password") {
        ImportError::PasswordProtected
    } else {
        ImportError::Corrupt {
            format: format.name(),
            detail,
        }
    }
}

/// Refuses a zip container whose members would expand past the cap, before any member
/// is inflated. An encrypted OOXML file is not a zip but a CFB container; calamine
/// recognises it, so it is let through to say "password-protected".
fn check_zip(path: &Path, format: Format, limits: &Limits) -> Result<(), ImportError> {
    let mut file = File::open(path)?;
    let mut magic = [0_u8; 4];
    let n = file.read(&mut magic)?;
    if n == 4 && magic == [0xD0, 0xCF, 0x11, 0xE0] {
        return Ok(());
    }
    file.seek(SeekFrom::Start(0))?;
    let mut archive =
        zip::ZipArchive::new(BufReader::new(file)).map_err(|e| ImportError::Corrupt {
            format: format.name(),
            detail: e.to_string(),
        })?;
    let mut total: u64 = 0;
    for index in 0..archive.len() {
        let member = archive
            .by_index_raw(index)
            .map_err(|e| ImportError::Corrupt {
                format: format.name(),
                detail: e.to_string(),
            })?;
        total = total.saturating_add(member.size());
        if total > limits.max_uncompressed_bytes {
            return Err(ImportError::TooLarge {
                limit: limits.max_uncompressed_bytes,
                detail: format!("{} members declare {total} bytes or more", index + 1),
            });
        }
    }
    Ok(())
}

/// Xlsx and Xlsb stream cells through readers of different types with the same methods;
/// one body serves both.
macro_rules! stream_workbook {
    ($book:ident, $format:expr, $options:expr, $collector:expr) => {{
        let (book, format, options, collector) = (&mut $book, $format, $options, $collector);
        let names = book.sheet_names();
        let sheet = match &options.sheet {
            Some(wanted) => find_sheet(&names, wanted)?,
            None => {
                let mut chosen = None;
                for name in &names {
                    let mut cells = book
                        .worksheet_cells_reader(name)
                        .map_err(|e| book_error(format, e))?;
                    while let Some(cell) = cells.next_cell().map_err(|e| book_error(format, e))? {
                        if !matches!(cell.get_value(), DataRef::Empty) {
                            chosen = Some(name.clone());
                            break;
                        }
                    }
                    if chosen.is_some() {
                        break;
                    }
                }
                chosen.ok_or(ImportError::Empty)?
            }
        };
        collector.sheet = Some(sheet.clone());
        let mut cells = book
            .worksheet_cells_reader(&sheet)
            .map_err(|e| book_error(format, e))?;
        let mut row = RowBuilder::default();
        while let Some(cell) = cells.next_cell().map_err(|e| book_error(format, e))? {
            let (r, c) = cell.get_position();
            if row.index != Some(r) && row.flush(collector)? == Flow::Stop {
                return Ok(());
            }
            row.index = Some(r);
            row.set(c as usize, data_ref_text(cell.get_value()), collector)?;
        }
        row.flush(collector)?;
        Ok(())
    }};
}

fn read_xlsx(
    path: &Path,
    format: Format,
    options: &ReadOptions,
    collector: &mut Collector<'_, '_>,
) -> Result<(), ImportError> {
    let mut book: Xlsx<_> = open_workbook(path).map_err(|e| book_error(format, e))?;
    stream_workbook!(book, format, options, collector)
}

fn read_xlsb(
    path: &Path,
    options: &ReadOptions,
    collector: &mut Collector<'_, '_>,
) -> Result<(), ImportError> {
    let format = Format::Xlsb;
    let mut book: Xlsb<_> = open_workbook(path).map_err(|e| book_error(format, e))?;
    stream_workbook!(book, format, options, collector)
}

fn read_ranges<RS, R>(
    book: &mut R,
    format: Format,
    options: &ReadOptions,
    collector: &mut Collector<'_, '_>,
) -> Result<(), ImportError>
where
    RS: Read + Seek,
    R: Reader<RS>,
    R::Error: std::fmt::Display,
{
    let names = book.sheet_names();
    let candidates = match &options.sheet {
        Some(wanted) => vec![find_sheet(&names, wanted)?],
        None => names,
    };
    for name in candidates {
        let range = book
            .worksheet_range(&name)
            .map_err(|e| book_error(format, e))?;
        if range.used_cells().next().is_none() && options.sheet.is_none() {
            continue;
        }
        collector.sheet = Some(name.clone());
        let Some((start_row, start_col)) = range.start() else {
            return Ok(());
        };
        for (offset, cells) in range.rows().enumerate() {
            let mut row = RowBuilder {
                index: Some(start_row + offset as u32),
                ..RowBuilder::default()
            };
            for (c, value) in cells.iter().enumerate() {
                if !matches!(value, Data::Empty) {
                    row.set(start_col as usize + c, data_text(value), collector)?;
                }
            }
            if row.flush(collector)? == Flow::Stop {
                return Ok(());
            }
        }
        return Ok(());
    }
    Ok(())
}

fn find_sheet(names: &[String], wanted: &str) -> Result<String, ImportError> {
    names
        .iter()
        .find(|n| n.as_str() == wanted)
        .or_else(|| names.iter().find(|n| n.eq_ignore_ascii_case(wanted)))
        .cloned()
        .ok_or_else(|| ImportError::SheetNotFound {
            wanted: wanted.to_owned(),
            available: names.join(", "),
        })
}

type CellText = Result<String, String>;

fn data_ref_text(value: &DataRef<'_>) -> CellText {
    Ok(match value {
        DataRef::Int(i) => i.to_string(),
        DataRef::Float(f) => format_number(*f),
        DataRef::String(s) => s.trim().to_owned(),
        DataRef::SharedString(s) => s.trim().to_owned(),
        DataRef::Bool(b) => b.to_string(),
        DataRef::DateTime(dt) if dt.is_datetime() => dt
            .as_datetime()
            .map(format_datetime)
            .unwrap_or_else(|| format_number(dt.as_f64())),
        DataRef::DateTime(dt) => format_number(dt.as_f64()),
        DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => s.clone(),
        DataRef::Error(e) => return Err(format!("formula error {e}")),
        DataRef::Empty => String::new(),
    })
}

fn data_text(value: &Data) -> CellText {
    Ok(match value {
        Data::Int(i) => i.to_string(),
        Data::Float(f) => format_number(*f),
        Data::String(s) => s.trim().to_owned(),
        Data::Bool(b) => b.to_string(),
        Data::DateTime(dt) if dt.is_datetime() => dt
            .as_datetime()
            .map(format_datetime)
            .unwrap_or_else(|| format_number(dt.as_f64())),
        Data::DateTime(dt) => format_number(dt.as_f64()),
        Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Error(e) => return Err(format!("formula error {e}")),
        Data::Empty => String::new(),
    })
}

/// Gathers one worksheet row from its cells (which arrive in column order).
#[derive(Default)]
struct RowBuilder {
    index: Option<u32>,
    cells: Vec<String>,
    problems: Vec<(usize, String)>,
}

impl RowBuilder {
    fn set(
        &mut self,
        column: usize,
        text: CellText,
        collector: &Collector<'_, '_>,
    ) -> Result<(), ImportError> {
        let empty = matches!(&text, Ok(t) if t.is_empty());
        if empty {
            return Ok(());
        }
        let limit = collector.limits.max_columns;
        if column >= limit {
            return Err(ImportError::TooManyColumns {
                row: u64::from(self.index.unwrap_or(0)) + 1,
                limit,
            });
        }
        if self.cells.len() <= column {
            self.cells.resize(column + 1, String::new());
        }
        match text {
            Ok(text) => self.cells[column] = text,
            Err(problem) => self.problems.push((column, problem)),
        }
        Ok(())
    }

    fn flush(&mut self, collector: &mut Collector<'_, '_>) -> Result<Flow, ImportError> {
        let Some(index) = self.index.take() else {
            return Ok(Flow::Continue);
        };
        let cells = std::mem::take(&mut self.cells);
        let problems = std::mem::take(&mut self.problems);
        collector.push(u64::from(index) + 1, cells, problems)
    }
}

/// Header detection, blank-row skipping, caps and batching, common to every format.
struct Collector<'s, 'f> {
    sink: &'s mut Sink<'f>,
    format: Format,
    sheet: Option<String>,
    limits: Limits,
    batch_size: usize,
    header_row: Option<u64>,
    batch: Vec<Row>,
    rows: u64,
    stopped: bool,
}

impl<'s, 'f> Collector<'s, 'f> {
    fn new(format: Format, options: &ReadOptions, sink: &'s mut Sink<'f>) -> Self {
        let batch_size = if options.batch_size == 0 {
            DEFAULT_BATCH
        } else {
            options.batch_size
        };
        Self {
            sink,
            format,
            sheet: None,
            limits: options.limits,
            batch_size,
            header_row: None,
            batch: Vec::with_capacity(batch_size),
            rows: 0,
            stopped: false,
        }
    }

    fn push(
        &mut self,
        number: u64,
        mut cells: Vec<String>,
        problems: Vec<(usize, String)>,
    ) -> Result<Flow, ImportError> {
        if self.stopped {
            return Ok(Flow::Stop);
        }
        while cells.last().is_some_and(|c| c.is_empty()) {
            cells.pop();
        }
        if cells.len() > self.limits.max_columns {
            return Err(ImportError::TooManyColumns {
                row: number,
                limit: self.limits.max_columns,
            });
        }
        if cells.is_empty() && problems.is_empty() {
            return Ok(Flow::Continue);
        }
        if self.header_row.is_none() {
            self.header_row = Some(number);
            let header = Header {
                row: number,
                names: header_names(cells),
                format: self.format,
                sheet: self.sheet.clone(),
            };
            let flow = (self.sink)(Event::Header(&header))?;
            return self.flow(flow);
        }
        self.rows += 1;
        if self.rows > self.limits.max_rows {
            return Err(ImportError::TooManyRows {
                limit: self.limits.max_rows,
            });
        }
        self.batch.push(Row {
            number,
            cells,
            problems,
        });
        if self.batch.len() >= self.batch_size {
            return self.flush();
        }
        Ok(Flow::Continue)
    }

    fn flush(&mut self) -> Result<Flow, ImportError> {
        if self.batch.is_empty() || self.stopped {
            return Ok(if self.stopped {
                Flow::Stop
            } else {
                Flow::Continue
            });
        }
        let rows = std::mem::replace(&mut self.batch, Vec::with_capacity(self.batch_size));
        let flow = (self.sink)(Event::Rows(rows))?;
        self.flow(flow)
    }

    fn flow(&mut self, flow: Flow) -> Result<Flow, ImportError> {
        if flow == Flow::Stop {
            self.stopped = true;
        }
        Ok(flow)
    }

    fn finish(mut self) -> Result<ReadSummary, ImportError> {
        self.flush()?;
        let header_row = self.header_row.ok_or(ImportError::Empty)?;
        if self.rows == 0 {
            return Err(ImportError::HeaderOnly { header_row });
        }
        Ok(ReadSummary {
            format: self.format,
            sheet: self.sheet,
            header_row,
            rows: self.rows,
            stopped: self.stopped,
        })
    }
}

/// Header names: blank (or merged-away) cells become `column_N`, repeats get `_2`, `_3`.
pub fn header_names(cells: Vec<String>) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(cells.len());
    for (index, cell) in cells.into_iter().enumerate() {
        let base = if cell.trim().is_empty() {
            format!("column_{}", index + 1)
        } else {
            cell.split_whitespace().collect::<Vec<_>>().join(" ")
        };
        let mut name = base.clone();
        let mut n = 2;
        while names.iter().any(|x| x.eq_ignore_ascii_case(&name)) {
            name = format!("{base}_{n}");
            n += 1;
        }
        names.push(name);
    }
    names
}

// ---- CSV / TSV ----

fn read_csv(path: &Path, collector: &mut Collector<'_, '_>) -> Result<(), ImportError> {
    let mut file = File::open(path)?;
    let mut sample = vec![0_u8; 64 * 1024];
    let mut filled = 0;
    while filled < sample.len() {
        let n = file.read(&mut sample[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    sample.truncate(filled);
    let encoding = sniff_encoding(&sample);
    let (text, _, _) = encoding.decode(&sample);
    let delimiter = sniff_delimiter(&text);
    let length = file.seek(SeekFrom::End(0))?;
    let mut tail = [0_u8; 2];
    file.seek(SeekFrom::Start(length.saturating_sub(2)))?;
    let n = file.read(&mut tail)?;
    let ends_with_newline = tail[..n].iter().any(|&b| b == b'\n' || b == b'\r');
    file.seek(SeekFrom::Start(0))?;
    let decoded = DecodeReader::new(BufReader::with_capacity(256 * 1024, file), encoding);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .buffer_capacity(256 * 1024)
        .from_reader(decoded);
    // csv reports a record's position before the blank lines it skips, so a record's
    // line is worked out from where it ends: one record is held back to know the last,
    // which ends without a newline when the file does.
    let mut current = csv::StringRecord::new();
    let mut held: Option<(csv::StringRecord, u64)> = None;
    loop {
        let more = match reader.read_record(&mut current) {
            Ok(more) => more,
            Err(error) => {
                return Err(ImportError::Corrupt {
                    format: "csv",
                    detail: error.to_string(),
                });
            }
        };
        if let Some((record, end_line)) = held.take() {
            let lines = 1 + record.as_slice().matches('\n').count() as u64;
            let number = if !more && !ends_with_newline {
                end_line + 1 - lines
            } else {
                end_line.saturating_sub(lines).max(1)
            };
            if push_record(&record, number, collector)? == Flow::Stop {
                return Ok(());
            }
        }
        if !more {
            break;
        }
        held = Some((current.clone(), reader.position().line()));
    }
    Ok(())
}

fn push_record(
    record: &csv::StringRecord,
    number: u64,
    collector: &mut Collector<'_, '_>,
) -> Result<Flow, ImportError> {
    let limit = collector.limits.max_columns;
    let width = (0..record.len())
        .rev()
        .find(|&i| !record[i].trim().is_empty())
        .map_or(0, |i| i + 1);
    if width > limit {
        return Err(ImportError::TooManyColumns { row: number, limit });
    }
    let cells = record
        .iter()
        .take(width)
        .map(|c| c.trim().to_owned())
        .collect();
    collector.push(number, cells, Vec::new())
}

/// UTF-8 (with or without BOM), UTF-16 with a BOM, else Windows-1252.
pub fn sniff_encoding(sample: &[u8]) -> &'static Encoding {
    if let Some((encoding, _)) = Encoding::for_bom(sample) {
        return encoding;
    }
    match std::str::from_utf8(sample) {
        Ok(_) => UTF_8,
        // Cut in the middle of a character at the end of the sample: still UTF-8.
        Err(e) if e.error_len().is_none() => UTF_8,
        Err(_) => WINDOWS_1252,
    }
}

/// The candidate (`,` `;` tab `|`) that splits the first lines most consistently.
pub fn sniff_delimiter(text: &str) -> u8 {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(20)
        .collect();
    let mut best = (b',', 0_usize, 0_usize);
    for candidate in [b',', b';', b'\t', b'|'] {
        let counts: Vec<usize> = lines
            .iter()
            .map(|line| count_outside_quotes(line, candidate))
            .collect();
        let Some(&first) = counts.first() else {
            continue;
        };
        if first == 0 {
            continue;
        }
        let consistent = counts.iter().filter(|&&c| c == first).count();
        if (consistent, first) > (best.1, best.2) {
            best = (candidate, consistent, first);
        }
    }
    best.0
}

fn count_outside_quotes(line: &str, delimiter: u8) -> usize {
    let mut quoted = false;
    let mut count = 0;
    for b in line.bytes() {
        if b == b'"' {
            quoted = !quoted;
        } else if b == delimiter && !quoted {
            count += 1;
        }
    }
    count
}

/// Transcodes any encoding_rs encoding to UTF-8 on the fly (malformed input becomes
/// U+FFFD), dropping a BOM.
struct DecodeReader<R> {
    inner: R,
    decoder: Decoder,
    input: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    finished: bool,
    output: Vec<u8>,
    out_pos: usize,
}

impl<R: Read> DecodeReader<R> {
    fn new(inner: R, encoding: &'static Encoding) -> Self {
        Self {
            inner,
            decoder: encoding.new_decoder_with_bom_removal(),
            input: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            eof: false,
            finished: false,
            output: Vec::new(),
            out_pos: 0,
        }
    }
}

impl<R: Read> Read for DecodeReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.out_pos < self.output.len() {
                let n = buf.len().min(self.output.len() - self.out_pos);
                buf[..n].copy_from_slice(&self.output[self.out_pos..self.out_pos + n]);
                self.out_pos += n;
                return Ok(n);
            }
            if self.finished {
                return Ok(0);
            }
            if self.start == self.end && !self.eof {
                self.start = 0;
                self.end = self.inner.read(&mut self.input)?;
                self.eof = self.end == 0;
            }
            let pending = &self.input[self.start..self.end];
            let capacity = self
                .decoder
                .max_utf8_buffer_length(pending.len())
                .unwrap_or(pending.len() * 3 + 16);
            self.output.clear();
            self.output.resize(capacity, 0);
            let (_, read, written, _) =
                self.decoder
                    .decode_to_utf8(pending, &mut self.output, self.eof);
            self.start += read;
            self.output.truncate(written);
            self.out_pos = 0;
            if self.eof && self.start == self.end {
                self.finished = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(name: &str, bytes: &[u8]) -> Result<(Header, Vec<Row>), ImportError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        File::create(&path).unwrap().write_all(bytes).unwrap();
        let format = detect_format(name, &path)?;
        let mut header = None;
        let mut rows = Vec::new();
        read(&path, format, &ReadOptions::default(), &mut |event| {
            match event {
                Event::Header(h) => header = Some(h.clone()),
                Event::Rows(batch) => rows.extend(batch),
            }
            Ok(Flow::Continue)
        })?;
        Ok((header.unwrap(), rows))
    }

    #[test]
    fn csv_sniffs_delimiter_and_encoding() {
        let (header, rows) = read_all(
            "a.csv",
            b"\xEF\xBB\xBFName;E-mail;City\n\nJos\xC3\xA9;jose@example.org;M\xC3\xA1laga;;\n",
        )
        .unwrap();
        assert_eq!(header.names, ["Name", "E-mail", "City"]);
        assert_eq!(rows.len(), 1, "blank row skipped");
        assert_eq!(rows[0].number, 3);
        assert_eq!(rows[0].cells, ["José", "jose@example.org", "Málaga"]);

        let (_, rows) = read_all("b.csv", b"Name\tCity\nJos\xE9\tK\xF6ln\n").unwrap();
        assert_eq!(
            rows[0].cells,
            ["José", "Köln"],
            "Windows-1252 fallback, tab"
        );

        let (_, rows) = read_all("c.csv", b"a,b\n\n\"x\ny\",2\n\n3,4").unwrap();
        assert_eq!(rows[0].number, 3);
        assert_eq!(
            rows[1].number, 6,
            "unterminated last line after a multi-line cell"
        );
    }

    #[test]
    fn headers_get_names_for_blank_and_repeated_cells() {
        assert_eq!(
            header_names(vec!["Email".into(), "".into(), "email".into()]),
            ["Email", "column_2", "email_2"]
        );
    }

    #[test]
    fn empty_and_header_only_files_are_refused() {
        assert_eq!(read_all("e.csv", b"\n\n").unwrap_err(), ImportError::Empty);
        assert_eq!(
            read_all("h.csv", b"\nName,Email\n,,\n").unwrap_err(),
            ImportError::HeaderOnly { header_row: 2 }
        );
    }

    #[test]
    fn unknown_and_corrupt_files_are_named() {
        assert!(matches!(
            read_all("x.pdf", b"%PDF").unwrap_err(),
            ImportError::UnsupportedType(_)
        ));
        assert!(matches!(
            read_all("x.xlsx", b"this is not a workbook").unwrap_err(),
            ImportError::Corrupt { .. }
        ));
    }

    #[test]
    fn delimiters_are_sniffed() {
        assert_eq!(sniff_delimiter("a;b;c\n1;2;3\n"), b';');
        assert_eq!(sniff_delimiter("a|b\n1|2\n"), b'|');
        assert_eq!(sniff_delimiter("\"x, y\";b\n\"1, 2\";3\n"), b';');
        assert_eq!(sniff_delimiter("single\n"), b',');
    }
}
