//! Moorings and tide tables of a small marina, documented by rustdoc in the tests.

/// Tide tables.
pub mod tides {
    /// Reads the tide table of a station from a file.
    ///
    /// Each line holds the time and height of one high or low water.
    pub fn read_tide_table(path: &str) -> Vec<(u32, f32)> {
        let _ = path;
        Vec::new()
    }
}

/// A mooring in the harbour.
pub struct Mooring {
    /// Length of the chain, in metres.
    pub chain: f32,
}

impl Mooring {
    /// How wide a circle of clear water the boat needs on this swing mooring: as wide as
    /// the chain is long, all around the buoy.
    pub fn swing_radius(&self) -> f32 {
        self.chain
    }
}

impl std::fmt::Display for Mooring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a mooring with {} m of chain", self.chain)
    }
}

/// The old name of [`Mooring`].
#[doc(hidden)]
pub use Mooring as Buoy;
