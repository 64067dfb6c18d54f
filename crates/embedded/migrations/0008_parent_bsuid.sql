-- The parent business-scoped user id (the same user across a business portfolio's accounts),
-- kept with the contact when WhatsApp sends one; sealed like the other identifiers.
ALTER TABLE contacts ADD COLUMN parent_user_id TEXT;
