//! Writing OCI image layouts and archives.
