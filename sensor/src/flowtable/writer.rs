//! JSON-lines output of flow records (file, appended, or standard output).

use std::{
    fs::OpenOptions,
    io::{BufWriter, Write},
    path::PathBuf,
};

use super::FlowRecord;
use crate::config::Output;

/// Errors of the record output, each saying what to check.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The file could not be opened for appending.
    #[error("cannot open flow records file {} for appending: {source}; check that its directory exists and is writable, or use --flows-file -", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A write or flush failed (disk full, closed pipe...).
    #[error("cannot write flow records to {dest}: {source}; check free space and the reader of the output")]
    Write {
        dest: String,
        source: std::io::Error,
    },
}

/// Buffered JSON-lines writer; the agent flushes it every interval and on
/// shutdown.
pub struct RecordWriter {
    out: BufWriter<Box<dyn Write + Send>>,
    dest: String,
    lines: u64,
}

impl std::fmt::Debug for RecordWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordWriter")
            .field("dest", &self.dest)
            .field("lines", &self.lines)
            .finish()
    }
}

impl RecordWriter {
    /// Opens `output`: a file is created if missing and appended to.
    pub fn open(output: &Output) -> Result<RecordWriter, WriterError> {
        match output {
            Output::Stdout => Ok(RecordWriter::new(
                Box::new(std::io::stdout()),
                "standard output",
            )),
            Output::File(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| WriterError::Open {
                        path: path.clone(),
                        source,
                    })?;
                Ok(RecordWriter::new(
                    Box::new(file),
                    &path.display().to_string(),
                ))
            }
        }
    }

    /// Writes into any sink; `dest` names it in errors.
    pub fn new(sink: Box<dyn Write + Send>, dest: &str) -> RecordWriter {
        RecordWriter {
            out: BufWriter::with_capacity(64 * 1024, sink),
            dest: dest.to_string(),
            lines: 0,
        }
    }

    /// Appends one line per record (buffered; see [`RecordWriter::flush`]).
    pub fn write(&mut self, records: &[FlowRecord]) -> Result<(), WriterError> {
        for r in records {
            let mut line = r.to_json_line();
            line.push('\n');
            self.out
                .write_all(line.as_bytes())
                .map_err(|e| self.error(e))?;
            self.lines += 1;
        }
        Ok(())
    }

    /// Pushes buffered lines to the file or stream.
    pub fn flush(&mut self) -> Result<(), WriterError> {
        self.out.flush().map_err(|e| self.error(e))
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    fn error(&self, source: std::io::Error) -> WriterError {
        WriterError::Write {
            dest: self.dest.clone(),
            source,
        }
    }
}
