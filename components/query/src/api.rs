//! (placeholder: filled by the helper building this module)
