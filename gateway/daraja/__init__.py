"""A Daraja (Safaricom M-Pesa API) client: OAuth token cache, STK push and STK query."""
