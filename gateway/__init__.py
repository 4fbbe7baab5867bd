"""The M-Pesa payment gateway: validates checkouts, talks to Daraja, stores every transaction."""
