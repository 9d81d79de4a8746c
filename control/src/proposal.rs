//! Proposals: strongSwan-style proposal strings, conversion to SA payload
//! proposals, and downgrade-safe selection that explains mismatches.
