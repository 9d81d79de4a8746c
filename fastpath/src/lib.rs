//! ironsa's ESP data plane.
