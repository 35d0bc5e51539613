# Предложения страниц части mailboxes.
mailboxes-title = Управление почтовыми ящиками сотрудников
mailboxes-connect-one = Подключить ящик
mailboxes-connect-many = Подключить несколько
mailboxes-filter = Фильтр ящиков
mailboxes-f-address = Адрес почты
mailboxes-f-mailbox = Название ящика
mailboxes-f-owner = Владелец (фамилия)
mailboxes-f-days = Не синхронизировался (дней)
mailboxes-f-crm = В CRM
mailboxes-f-disk-min = Место на диске от (МБ)
mailboxes-f-disk-max = Место на диске до (МБ)
mailboxes-f-sender = Имя отправителя
mailboxes-f-access-by = Доступ у (адрес)
mailboxes-f-crm-queue = Очередь CRM (адрес)
mailboxes-f-advanced = Выражение фильтра
mailboxes-advanced = Расширенный фильтр
mailboxes-advanced-hint = Например: sync_state = AUTH_FAILED OR unread_count > 100. Поля: email, name, sender_name, owner, days_since_sync, in_crm, disk_mb, unread_count, message_count, sync_state, owner_dismissed.
mailboxes-filter-nobody = В вашей организации ни у кого нет такого адреса.
mailboxes-filter-number = Введите число, не меньше нуля.
mailboxes-filter-parentheses = Проверьте скобки и кавычки: каждая открытая должна быть закрыта.
mailboxes-any = Все
mailboxes-yes = Да
mailboxes-no = Нет
mailboxes-apply = Применить фильтр
mailboxes-clear = Сбросить фильтр
mailboxes-columns = Колонки
mailboxes-columns-legend = Какие колонки показывать
mailboxes-columns-save = Сохранить колонки
mailboxes-col-employee = Сотрудник
mailboxes-col-email = Адрес почты
mailboxes-col-name = Название ящика
mailboxes-col-sender-name = Имя отправителя
mailboxes-col-last-sync-time = Последняя синхронизация
mailboxes-col-sync-state = Состояние
mailboxes-col-unread-count = Непрочитанные
mailboxes-col-message-count = Писем
mailboxes-col-disk-mb = Место на диске (МБ)
mailboxes-col-in-crm = В CRM
mailboxes-col-crm-queue = Очередь CRM
mailboxes-col-access-by = Доступ у
mailboxes-actions = Действия
mailboxes-total = { $count ->
    [one] { $count } ящик
    [few] { $count } ящика
   *[many] { $count } ящиков
}
mailboxes-total-about = { $count ->
    [one] Около { $count } ящика
    [few] Около { $count } ящиков
   *[many] Около { $count } ящиков
}
mailboxes-unread = { $count ->
    [one] { $count } непрочитанное письмо
    [few] { $count } непрочитанных письма
   *[many] { $count } непрочитанных писем
}
mailboxes-dismissed = уволен
mailboxes-never = ни разу
mailboxes-sync-now = Синхронизировать
mailboxes-sync-now-of = Синхронизировать { $address } сейчас
mailboxes-menu-of = Действия с { $address }
mailboxes-mail = Почта
mailboxes-edit = Изменить
mailboxes-transfer = Передать
mailboxes-disconnect = Отключить
mailboxes-none = Подходящих ящиков нет.
mailboxes-pages = Страницы
mailboxes-first = Первая страница
mailboxes-prev = Назад
mailboxes-next = Дальше
mailboxes-state-pending = ждёт первой синхронизации
mailboxes-state-ok = в порядке
mailboxes-state-syncing = синхронизируется
mailboxes-state-auth-failed = пароль не принят
mailboxes-state-error = ошибка
mailboxes-edit-title = Настройки ящика
mailboxes-name = Название ящика
mailboxes-sender-name = Имя отправителя
mailboxes-host = Сервер { $server }
mailboxes-port = Порт { $server }
mailboxes-security = Защита { $server }
mailboxes-security-tls = TLS
mailboxes-security-starttls = STARTTLS
mailboxes-security-none = Нет (открытый текст)
mailboxes-username = Имя пользователя { $server }
mailboxes-username-hint = Оставьте пустым, чтобы входить с адресом ящика.
mailboxes-password = Пароль
mailboxes-password-hint = Оставьте пустым, чтобы не менять сохранённый. При смене сервера пароль нужно ввести заново.
mailboxes-crm = CRM
mailboxes-in-crm = Связать ящик с CRM
mailboxes-queue = Очередь (по одному адресу в строке)
mailboxes-queue-hint = Сотрудники, которым по очереди достаются лиды и контакты из этого ящика.
mailboxes-save = Сохранить
mailboxes-cancel = Отмена
mailboxes-nobody-with = В вашей организации ни у кого нет адреса { $address }.
mailboxes-transfer-title = Передача ящика
mailboxes-transfer-lead = Передать { $address } другому сотруднику.
mailboxes-owner-now = Сейчас ящик принадлежит: { $name }.
mailboxes-new-owner = Адрес нового владельца
mailboxes-disconnect-title = Отключение ящика
mailboxes-disconnect-lead = Отключить { $address }? Письма останутся на почтовом сервере, Mailroom перестанет их синхронизировать.
mailboxes-connect-title = Подключение ящика
mailboxes-connect = Подключить
mailboxes-check-only = Только проверить
mailboxes-check-ok = Оба входа работают: ящик можно подключить.
mailboxes-address = Адрес почты
mailboxes-owner = Адрес владельца
mailboxes-owner-hint = Оставьте пустым, чтобы подключить ящик себе.
mailboxes-many-title = Подключение нескольких ящиков
mailboxes-many-lead = Ящики одного домена с одинаковыми настройками IMAP и SMTP.
mailboxes-many-lines = Ящики
mailboxes-many-lines-hint = По одному в строке: адрес, пароль и, если нужно, адрес владельца через пробел. Не больше 100.
mailboxes-many-passwords-again = Пароли из строк убраны ради безопасности: введите каждый пароль снова, после его адреса.
mailboxes-many-bad-line = В строке { $line } нужны адрес, пароль и, если нужно, адрес владельца.
mailboxes-many-count = Введите от 1 до { $max } ящиков.
mailboxes-many-done = { $count ->
    [one] Подключён { $count } ящик
    [few] Подключено { $count } ящика
   *[many] Подключено { $count } ящиков
}
mailboxes-many-would = { $count ->
    [one] Можно подключить { $count } ящик
    [few] Можно подключить { $count } ящика
   *[many] Можно подключить { $count } ящиков
}
mailboxes-result = Результат
mailboxes-step = Шаг
mailboxes-reason = Причина
mailboxes-connected = подключён
mailboxes-would-connect = можно подключить
mailboxes-failed = не подключён
mailboxes-step-request = запрос
mailboxes-back = К списку ящиков
notice-sync-queued = Синхронизация запрошена: новые письма появятся через минуту.
notice-columns-saved = Колонки сохранены.
notice-mailbox-saved = Настройки ящика сохранены.
notice-nothing-changed = Ничего не изменилось.
notice-transferred = Ящик передан новому владельцу.
notice-disconnected = Ящик отключён.
notice-connected = Ящик подключён.
