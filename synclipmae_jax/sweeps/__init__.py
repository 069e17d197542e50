"""Config sweeps: declared (`hyper`), expanded (`expand`), indexed (`index`), run (`launch`)."""
