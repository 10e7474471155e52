"""The control plane: the httpx client (paging, retries, error translation) and
the local control plane server that speaks the same `/v2` API."""
