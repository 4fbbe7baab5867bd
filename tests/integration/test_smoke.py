async def test_magic_success_number_completes_with_a_receipt(running):
    pushed = await running.push("0700000000", 100)
    assert pushed["success"] is True
    body = await running.wait_status(pushed["checkoutRequestId"], "completed")
    assert body["transaction_id"] == body["MpesaReceiptNumber"]
