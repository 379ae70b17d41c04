"""Provider clients: each turns a ChatRequest into a ChatResult over one lean HTTP stack (or in-process)."""
