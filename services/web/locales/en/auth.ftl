# Sentences of the auth pages.
sign-in-title = Sign in
sign-in-email = Login email
sign-in-password = Password
sign-in-submit = Sign in
sign-in-forgot = Forgot your password?
sign-in-wrong = The address or the password is wrong.
notice-signed-out = You signed out.
