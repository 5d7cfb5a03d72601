"""Pure numerics: top-k singular values (warm-started block power iteration), Hessian eigenvalues (Lanczos)."""
