//! Errors of a policy pack: each one points at `file:line:column` and says
//! what was expected. A pack is rejected with all of its errors at once.

use super::model::Location;

/// One problem in a policy pack, at the place it was written.
///
/// Displays as `file:line:column: message`. A problem with a whole file or
/// directory (unreadable, no policy file) has line 0 and displays as
/// `file: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    /// Where the problem was found.
    pub location: Location,
    /// What is wrong and what was expected.
    pub message: String,
}

impl PolicyError {
    /// An error at `location`.
    pub fn new(location: Location, message: impl Into<String>) -> Self {
        Self { location, message: message.into() }
    }

    /// An error about a whole file or directory (no line or column).
    pub fn whole_file(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Location { file: file.into().into(), line: 0, column: 0 }, message)
    }
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.location.line == 0 {
            write!(f, "{}: {}", self.location.file, self.message)
        } else {
            write!(f, "{}: {}", self.location, self.message)
        }
    }
}

/// Every problem found in a rejected pack, in file order. Displays one error
/// per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl std::fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_formats() {
        let at = Location { file: "a.yaml".into(), line: 3, column: 5 };
        let errs = PolicyErrors(vec![PolicyError::new(at, "bad"), PolicyError::whole_file("dir", "no policy file")]);
        assert_eq!(errs.to_string(), "a.yaml:3:5: bad\ndir: no policy file");
    }
}
