"""The upstream side: the channel to the Operations server and the raw-bytes forwarder."""
