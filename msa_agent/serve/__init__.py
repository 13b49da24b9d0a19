"""The HTTP API, the MCP server and the web inspector over one Memory (``msa serve``)."""
