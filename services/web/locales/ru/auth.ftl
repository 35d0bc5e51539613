# Предложения страниц части auth.
sign-in-title = Вход
sign-in-email = Email для входа
sign-in-password = Пароль
sign-in-submit = Войти
sign-in-forgot = Забыли пароль?
sign-in-wrong = Неверный адрес или пароль.
notice-signed-out = Вы вышли из системы.
