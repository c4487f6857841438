"""The REST/JSON door: Google's REST surface mapped onto the Operations RPCs, through the chain."""
